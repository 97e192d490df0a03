"""Per-item failures as ``rejects`` rows; only infrastructure failures stop a run.

A stage processes many items (videos, benchmark items). Whatever goes wrong with
one item — a ``VideoError`` with its own sentence, or any other exception from a
decoder or a library — becomes a reject naming the exception type, and the
stage goes on. Failures of the machine itself (disk full, read-only or lost
filesystem, out of memory) are not the item's fault: they stop the run, so that a
fixed machine picks the items up again instead of leaving them all rejected.
"""

from __future__ import annotations

import errno

from core.tables import now_utc


class ItemError(ValueError):
    """A checked bad input: its message is already the sentence a person acts on."""


INFRASTRUCTURE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.ENOMEM, errno.ESTALE}


def is_infrastructure_error(err: BaseException) -> bool:
    """Whether ``err`` is the machine's failure (stop the run) rather than the item's (reject it)."""
    if not isinstance(err, Exception) or isinstance(err, MemoryError):
        return True  # KeyboardInterrupt, SystemExit, out of memory
    return isinstance(err, OSError) and err.errno in INFRASTRUCTURE_ERRNOS


def reason_for(err: BaseException, item_hint: str) -> str:
    """One sentence for a person: the error's own text, and what to do when it is not ours."""
    text = " ".join(str(err).split()) or "no message"
    if isinstance(err, ItemError):
        return text
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{type(err).__name__}: {text}; {item_hint}"


def reject_row(stage: str, item: str, err: BaseException, item_hint: str, config_digest: str | None = None) -> dict:
    """The one builder of ``rejects`` rows: ``err`` on ``item`` in ``stage``, tried with the settings ``config_digest``.

    ``reason``: the sentence a person acts on; ``error``: the exception type; ``hint``: what to do
    about this item, kept in its own column so nothing has to be parsed back out of the reason.
    """
    return dict(stage=stage, item=item, reason=reason_for(err, item_hint), at=now_utc(), error=type(err).__name__,
                config_digest=config_digest, hint=item_hint)

"""Who may vote.

Everybody can read every page. Voting needs an identity the study knows:

* **OIDC** (``st.login``) when ``.streamlit/secrets.toml`` has an ``[auth]``
  section (Streamlit's own format: redirect_uri, cookie_secret, client_id, ...,
  or named providers ``[auth.<name>]``). A signed-in user votes under their
  email when the provider says it is verified (``email_verified``), else under
  their subject. Optionally restrict with ``[dashboard] allowed_emails = [...]``
  and/or ``allowed_domains = ["lab.org"]``: then only a verified email on the list
  votes (``require_verified_email = false`` accepts an email from a provider that
  sends no ``email_verified`` claim at all; a claim of false is always refused).
* **Voter tokens** otherwise: ``[voters]`` maps a voter name to a secret token,
  in clear or as ``"sha256:<hex digest>"``::

      [voters]
      alice = "correct-horse-battery"
      bob = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

  The voter types the token in the sidebar; it is compared in constant time and
  never put in a URL. ``draganything voters add --secrets FILE --name NAME`` makes a
  random token, stores only its digest in FILE and prints the token once;
  ``draganything dashboard --secrets FILE`` reads that file instead of
  ``.streamlit/secrets.toml``. The session keeps the token's digest and checks it
  on every page run, so a rotated token ends the sessions opened with the old one.

Anyone else (not signed in, unknown token, email not allowed) is a reader.

The Drag page's generation and "Save case" need the same identity as voting,
or, when ``[drag] allowed = [...]`` is set, a voter name, email or ``@domain`` on
that list (``["*"]``: anyone who can reach the page; only for a dashboard bound
to 127.0.0.1 on a single-user machine).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets as _random
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import streamlit as st

SESSION_KEY = "voter_identity"
FAILURES_KEY = "voter_token_failures"
TOKEN_FAILURES = 5  # wrong tokens a session may try ...
TOKEN_WINDOW_S = 300.0  # ... within this many seconds; then it waits until the oldest leaves the window


def token_wait_s(failures: list[float], now: float) -> float:
    """Seconds this session must wait before its next token is even checked (0 = check it now)."""
    recent = [t for t in failures if now - t < TOKEN_WINDOW_S]
    if len(recent) < TOKEN_FAILURES:
        return 0.0
    return TOKEN_WINDOW_S - (now - sorted(recent)[-TOKEN_FAILURES])


@dataclass(frozen=True)
class Identity:
    voter: str | None  # the id votes are stored under; None = reader
    method: str  # "oidc" | "token" | "none"
    reason: str = ""  # why this person cannot vote (shown on the Vote page)

    @property
    def can_vote(self) -> bool:
        return self.voter is not None


def _secrets() -> Mapping[str, Any]:
    try:
        return {k: st.secrets[k] for k in st.secrets.keys()}
    except Exception:  # noqa: BLE001 - no secrets file at all: nothing configured
        return {}


def oidc_configured(secrets: Mapping[str, Any] | None = None) -> bool:
    s = _secrets() if secrets is None else secrets
    return "auth" in s


def oidc_providers(secrets: Mapping[str, Any]) -> list[str]:
    """Named providers (``[auth.google]`` ...); empty list = the default provider."""
    auth = secrets.get("auth") or {}
    return [k for k, v in dict(auth).items() if isinstance(v, Mapping)]


def check_token(tokens: Mapping[str, Any], given: str) -> str | None:
    """The voter whose token is ``given``, or None. Constant-time comparisons, all entries checked."""
    if not given:
        return None
    given_digest = hashlib.sha256(given.encode()).hexdigest()
    found = None
    for name, expected in dict(tokens).items():
        expected = str(expected)
        if expected.startswith("sha256:"):
            ok = hmac.compare_digest(expected[7:].lower(), given_digest)
        else:
            ok = hmac.compare_digest(expected.encode(), given.encode())
        if ok and found is None:
            found = str(name)
    return found


VOTER_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def add_voter(path: str | Path, name: str) -> str:
    """Give ``name`` a new random voter token in the secrets file ``path``; returns the token.

    Only the token's SHA-256 digest is written (``name = "sha256:<hex>"`` under
    ``[voters]``), so the file never holds a usable token; the rest of the file is kept,
    and a voter who already has a token gets a new one (the old one stops working).
    The file is created readable by its owner only.
    """
    if not VOTER_NAME.match(name):
        raise ValueError(f"voter name {name!r} must be 1-64 letters, digits, '_' or '-' (it is a TOML key)")
    path = Path(path)
    text = path.read_text() if path.exists() else ""
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{path} is not valid TOML ({err}); fix or remove it first") from None
    token = _random.token_urlsafe(18)
    line = f'{name} = "sha256:{hashlib.sha256(token.encode()).hexdigest()}"'
    lines = text.splitlines()
    header = next((i for i, x in enumerate(lines) if x.strip() == "[voters]"), None)
    if header is None:
        lines += ([""] if lines else []) + ["[voters]", line]
    else:
        end = next((i for i in range(header + 1, len(lines)) if lines[i].strip().startswith("[")), len(lines))
        mine = [i for i in range(header + 1, end) if re.match(rf"^\s*{re.escape(name)}\s*=", lines[i])]
        if mine:
            lines[mine[0]] = line
        else:
            lines.insert(end, line)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    os.replace(tmp, path)
    assert check_token(tomllib.loads(path.read_text())["voters"], token) == name
    return token


def _email_allowed(email: str, dash: Mapping[str, Any]) -> bool:
    emails, domains = _allow_list(dash)
    if not emails and not domains:
        return True
    e = email.lower()
    return e in emails or (e.rsplit("@", 1)[-1] in domains)


def _allow_list(dash: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    emails = [str(e).lower() for e in dash.get("allowed_emails", [])]
    domains = [str(d).lower().lstrip("@") for d in dash.get("allowed_domains", [])]
    return emails, domains


def _verified(user: Mapping[str, Any]) -> bool | None:
    """The ID token's ``email_verified`` claim: True, False, or None when the provider sends none."""
    v = user.get("email_verified")
    if v is None:
        return None
    return v is True or str(v).lower() == "true"


def _oidc_identity(user: Mapping[str, Any], dash: Mapping[str, Any]) -> Identity:
    if not user.get("is_logged_in", False):
        return Identity(None, "oidc", "Sign in (sidebar) to vote.")
    # Case-folded: ALICE@LAB.ORG and alice@lab.org are one voter (providers treat them as one mailbox).
    email, sub = str(user.get("email") or "").strip().lower(), str(user.get("sub") or "")
    verified = _verified(user)
    trusted = bool(email) and (verified is True or (verified is None and not dash.get("require_verified_email", True)))
    emails, domains = _allow_list(dash)
    if emails or domains:  # an allow-list: only a verified email on it votes
        if not email:
            return Identity(None, "oidc", "Your sign-in carries no email, and this study's voter list is by email; ask the study's organiser.")
        if not trusted:
            return Identity(None, "oidc", f"Your identity provider has not verified {email}; verify it there, then sign in again.")
        if not _email_allowed(email, dash):
            return Identity(None, "oidc", f"{email} is not on this study's voter list; you can read but not vote.")
        return Identity(email, "oidc")
    voter = email if trusted else sub  # an unverified email could be anyone's: vote under the subject instead
    if not voter:
        return Identity(None, "oidc", "Your sign-in carries no verified email or subject; ask the study's organiser.")
    return Identity(voter, "oidc")


def _token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _still_valid(tokens: Mapping[str, Any], voter: str, digest: str) -> bool:
    """Whether ``voter``'s configured token is still the one whose digest the session holds."""
    expected = dict(tokens).get(voter)
    if expected is None:
        return False
    expected = str(expected)
    have = expected[7:].lower() if expected.startswith("sha256:") else _token_digest(expected)
    return hmac.compare_digest(have, digest)


def identity() -> Identity:
    """The current session's identity (no widgets drawn)."""
    secrets = _secrets()
    if oidc_configured(secrets):
        return _oidc_identity(st.user, secrets.get("dashboard", {}) or {})
    tokens = secrets.get("voters")
    if not tokens:
        return Identity(
            None,
            "none",
            "Voting is not set up: add voters to .streamlit/secrets.toml ([voters] name = \"token\") "
            "or configure OIDC sign-in ([auth]).",
        )
    held = st.session_state.get(SESSION_KEY)
    if isinstance(held, dict) and held.get("voter"):
        if _still_valid(tokens, held["voter"], held.get("digest", "")):
            return Identity(held["voter"], "token")
        held = st.session_state[SESSION_KEY] = {"ended": True}  # the token was rotated or removed: this session ends
    if isinstance(held, dict) and held.get("ended"):
        return Identity(None, "token", "Your voter token is no longer valid (it was changed); enter the current one in the sidebar.")
    return Identity(None, "token", "Enter your voter token in the sidebar to vote.")


def drag_permission() -> tuple[bool, str]:
    """(may generate and save cases on the Drag page, why not)."""
    secrets = _secrets()
    allowed = (secrets.get("drag") or {}).get("allowed")
    ident = identity()
    if allowed is None:
        if ident.can_vote:
            return True, ""
        return False, ("Generating videos and saving cases needs the same identity as voting. " + ident.reason
                       + " (The organiser can also list people under [drag] allowed in secrets.toml.)")
    names = [str(a).lower() for a in allowed]
    if "*" in names:
        return True, ""
    who = _drag_principal(secrets, ident)
    if who and (who.lower() in names or ("@" in who and "@" + who.rsplit("@", 1)[-1].lower() in names)):
        return True, ""
    return False, ("Generating videos and saving cases is limited to the people listed under [drag] allowed"
                   + (f"; {who} is not one of them." if who else f". {ident.reason}"))


def _drag_principal(secrets: Mapping[str, Any], ident: Identity) -> str | None:
    """Who is signed in, for the [drag] list: the voter, or a verified email that is not on the voter list."""
    if ident.can_vote:
        return ident.voter
    if oidc_configured(secrets):
        user = st.user
        dash = dict(secrets.get("dashboard", {}) or {})
        relaxed = _oidc_identity(user, {k: v for k, v in dash.items() if k not in ("allowed_emails", "allowed_domains")})
        email = str(user.get("email") or "")
        return email if relaxed.can_vote and relaxed.voter == email and email else None
    return None


def sidebar() -> Identity:
    """Sign-in / sign-out controls in the sidebar; returns the identity after them."""
    secrets = _secrets()
    ident = identity()
    with st.sidebar:
        if ident.method == "oidc":
            if ident.can_vote:
                st.caption(f"Signed in as **{ident.voter}**")
                if st.button("Sign out", key="auth_logout"):
                    st.logout()
            elif st.user.get("is_logged_in", False):
                st.caption(ident.reason)
                if st.button("Sign out", key="auth_logout"):
                    st.logout()
            else:
                providers = oidc_providers(secrets)
                if providers:
                    for p in providers:
                        if st.button(f"Sign in with {p}", key=f"auth_login_{p}"):
                            st.login(p)
                elif st.button("Sign in to vote", key="auth_login"):
                    st.login()
        elif ident.method == "token":
            if ident.can_vote:
                st.caption(f"Voting as **{ident.voter}**")
                if st.button("Sign out", key="auth_token_logout"):
                    st.session_state.pop(SESSION_KEY, None)
                    st.rerun()
            else:
                given = st.text_input("Voter token", type="password", key="auth_token_input", help="Given to you by the study's organiser. Readers need none.")
                failures = st.session_state.setdefault(FAILURES_KEY, {"at": [], "last": None})
                wait = token_wait_s(failures["at"], time.time()) if given else 0.0
                if given and _token_digest(given) == failures["last"]:  # the same wrong token, shown again on a rerun
                    st.error("Unknown voter token; you can read but not vote.")
                elif wait > 0:  # guessing is throttled: the token is not even compared
                    st.error(f"Too many wrong voter tokens in this session; wait {wait:.0f} s, then enter it again.")
                elif given:
                    voter = check_token(secrets.get("voters") or {}, given)
                    if voter is None:
                        failures["at"].append(time.time())
                        failures["last"] = _token_digest(given)
                        st.error("Unknown voter token; you can read but not vote.")
                    else:
                        st.session_state[SESSION_KEY] = {"voter": voter, "digest": _token_digest(given)}
                        st.session_state.pop("auth_token_input", None)
                        st.rerun()
    return identity()

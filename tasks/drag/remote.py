"""A drag generation as a Ray task with a progress actor the page polls (``drag.executor: ray``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.config import Config
from tasks.drag.generation import run_drag
from tasks.suites import SuiteItem


class _ProgressBoard:
    """A tiny Ray actor the generation task reports to and the page polls."""

    def __init__(self):
        self.state = {"stage": "queued", "done": 0, "total": 0}

    def set(self, stage: str, done: int, total: int) -> None:
        self.state = {"stage": stage, "done": int(done), "total": int(total)}

    def get(self) -> dict:
        return dict(self.state)


def _generate_task(workdir_url, checkpoint, item, cfg, seed, relpath, board) -> dict:
    def report(stage, done, total):
        board.set.remote(stage, done, total)

    # Ray hands numpy arrays over read-only (zero copy); torch wants writable ones.
    for name in ("image", "masks", "trajectories", "radii"):
        setattr(item, name, np.array(getattr(item, name)))

    return run_drag(workdir_url, checkpoint, item, cfg, seed, relpath, report)


@dataclass
class RemoteGeneration:
    """A generation running as a Ray task: poll its progress, wait for its result."""

    ref: object
    board: object
    relpath: str

    def progress(self) -> dict:
        import ray

        try:
            return ray.get(self.board.get.remote(), timeout=5)
        except Exception:  # noqa: BLE001 - progress is best effort
            return {"stage": "running", "done": 0, "total": 0}

    def wait(self, timeout: float) -> bool:
        import ray

        ready, _ = ray.wait([self.ref], timeout=timeout)
        return bool(ready)

    def result(self) -> dict:
        """The task's result; a :class:`DragError` raised in the task comes back as itself."""
        import ray

        try:
            return ray.get(self.ref)
        except ray.exceptions.RayTaskError as err:
            cause = getattr(err, "cause", None)
            if isinstance(cause, BaseException):
                raise cause from None
            raise
        finally:
            self.close()

    def close(self) -> None:
        """Stop the progress actor (the task itself runs to its end)."""
        import ray

        try:
            ray.kill(self.board)
        except Exception:  # noqa: BLE001 - already gone
            pass


def submit(workdir_url: str, checkpoint: dict, item: SuiteItem, cfg: Config, seed: int, relpath: str) -> RemoteGeneration:
    """Start :func:`run_drag` as a Ray task (resources from ``cfg.runtime``) with a progress actor."""
    import ray

    from core.runtime import QUIET_ENV, ensure_ray_held, ray_task_options

    ensure_ray_held(cfg.runtime, {k: QUIET_ENV[k] for k in ("PREFECT_SERVER_ANALYTICS_ENABLED", "RAY_DEDUP_LOGS")})
    board = ray.remote(num_cpus=0)(_ProgressBoard).remote()
    opts = ray_task_options(cfg.runtime)
    opts["max_retries"] = 0  # a failed generation is reported, not silently repeated
    ref = ray.remote(_generate_task).options(**opts).remote(workdir_url, checkpoint, item, cfg, int(seed), relpath, board)
    return RemoteGeneration(ref, board, relpath)

"""The same training function under Ray Train (DDP over 2 CPU workers, gloo); a killed worker is retried from the last checkpoint."""

import shutil
import threading
import time

import psutil
import pytest

from core.tables import Workdir

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_two_ddp_workers_train_on_clips_encoded_once_and_rank0_writes_once(labelled, fast_overrides, tmp_path, orchestration_ready):
    import ray

    from core.config import load_config
    from core.runtime import ensure_ray, worker_env
    from flows.train import train_with_ray_train

    workdir = tmp_path / "w"
    shutil.copytree(labelled, workdir)
    cfg = load_config("tiny", [*fast_overrides, "train.num_workers=2", "runtime.task_num_cpus=1", "train.cpus_per_worker=1"])
    ensure_ray(cfg.runtime, worker_env(orchestration_ready))
    try:
        # more CPUs than the local Ray has: a clear error, not a wait that never ends
        greedy = load_config("tiny", [*fast_overrides, "train.num_workers=2", "train.cpus_per_worker=64"])
        with pytest.raises(ValueError, match="needs 2 workers x 64 CPUs = 128 CPUs.*lower train.num_workers"):
            train_with_ray_train(str(workdir), greedy, None, 2)
        out = train_with_ray_train(str(workdir), cfg, None, 2)
    finally:
        ray.shutdown()
    assert out["step"] == 2
    # preprocessing ran once per clip (3 videos and their mirror images), before the ranks; a rank encodes nothing
    # (under DDP one that finds a cache missing stops), and no cache file was written once the ranks had begun (below)
    assert out["encoded"] == 6
    caches = list((workdir / "cache" / "train").rglob("*.pt"))
    assert len(caches) == 6
    wd = Workdir(workdir)
    ckpts = wd.read("checkpoints")
    # every cache file was written before the ranks began (rank 0 writes the step-0 checkpoint first), and none after
    began = ckpts.loc[ckpts["step"] == 0, "created_at"].iloc[0].timestamp()
    assert max(f.stat().st_mtime for f in caches) < began
    assert sorted(ckpts["step"]) == [0, 2] and not ckpts.duplicated("checkpoint_id").any()
    assert sorted(wd.read("train_log")["step"]) == [1, 2]


def _train_workers() -> set[int]:
    return {p.pid for p in psutil.process_iter(["cmdline"]) if " ".join(p.info["cmdline"] or []).startswith("ray::RayTrainWorker")}


def _kill_a_train_worker_after_step(workdir, step: int, stop: threading.Event, seen: dict) -> None:
    """SIGKILL one Ray Train worker once the run has a checkpoint at ``step`` or later; then note the workers started after."""
    while not stop.is_set() and "killed" not in seen:
        ckpts = Workdir(workdir).read("checkpoints")
        workers = _train_workers()
        if len(ckpts) and ckpts["step"].max() >= step and workers:
            seen["before"], seen["killed"] = workers, min(workers)
            psutil.Process(seen["killed"]).kill()  # like a lost node: no cleanup
        time.sleep(0.1)
    while not stop.is_set():
        seen.setdefault("after", set()).update(_train_workers() - seen.get("before", set()))
        time.sleep(0.2)


def test_a_killed_ray_train_worker_is_retried_from_the_last_checkpoint(labelled, fast_overrides, tmp_path, orchestration_ready):
    import ray

    from core.config import load_config
    from core.runtime import ensure_ray, worker_env
    from flows.train import train_with_ray_train

    workdir = tmp_path / "w"
    shutil.copytree(labelled, workdir)
    cfg = load_config("tiny", [*fast_overrides, "train.num_workers=2", "runtime.task_num_cpus=1", "train.cpus_per_worker=1",
                               "runtime.max_retries=2"])
    ensure_ray(cfg.runtime, worker_env(orchestration_ready))
    stop, seen = threading.Event(), {}
    killer = threading.Thread(target=_kill_a_train_worker_after_step, args=(workdir, 2, stop, seen))
    killer.start()
    try:
        out = train_with_ray_train(str(workdir), cfg, None, 8)
    finally:
        stop.set()
        killer.join()
        ray.shutdown()
    assert "killed" in seen, "no Ray Train worker was caught running"
    assert seen.get("after"), "Ray Train did not start a new worker group after the kill"  # FailureConfig; Ray's default gives up
    assert out["step"] == 8
    ckpts = Workdir(workdir).read("checkpoints")
    # every checkpoint once: the new group continued from the run's latest checkpoint (run_training resumes the run)
    assert sorted(ckpts["step"]) == [0, 2, 4, 6, 8] and not ckpts.duplicated("checkpoint_id").any()
    log = Workdir(workdir).read("train_log")
    assert sorted(log["step"]) == list(range(1, 9))

"""The same training function under Ray Train (DDP over 2 CPU workers, gloo)."""

import shutil

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

"""Flow ``train``: the controller's training as one Ray task, or Ray Train (DDP) across workers.

The same function (``tasks.train.run_training``) runs in both: in one process on
a CPU machine, and on each of ``train.num_workers`` workers under Ray Train's
``TorchTrainer`` (rank 0 writes checkpoints and tables). A killed worker is
retried (Ray Train's ``FailureConfig``, ``runtime.max_retries`` times), and the retry
continues from the run's latest checkpoint in the workdir.
"""

from __future__ import annotations

from prefect import flow, task
from prefect_ray.context import remote_options

from core.checkpoints import latest_of_config
from core.config import Config, load_config
from core.runtime import ray_address, ray_task_options, transient_errors
from core.tables import Workdir
from flows.runtime import TASK_RETRIES, ProjectRayTaskRunner, use_reserved_cpus
from tasks.train import run_training


@task(name="train-controller", **TASK_RETRIES)
def train_task(workdir_url: str, cfg: Config, resume: str | None, steps: int | None, progress: bool, cache_key: str | None = None) -> dict:
    use_reserved_cpus(training_cpus(cfg))
    return run_training(workdir_url, cfg, resume, steps, progress, cache_key=cache_key)


def preprocess_stage(workdir_url: str, cfg: Config) -> dict:
    """Encode every training clip that lacks a cache, once: one Ray task per shard of ``labels.chunk_size``
    videos, each with a GPU when ``train.use_gpu`` (or ``runtime.task_num_gpus``). Training ranks then only read.

    With ``train.fit_base`` the base is fitted inside the training task, so that task encodes its clips itself.
    """
    import ray

    from core.tables import Workdir
    from tasks.preprocess import cache_key, missing, shards

    if cfg.train.fit_base.enabled:
        return {"encoded": [], "tasks": 0, "key": None}
    key = cache_key(cfg)
    todo = missing(Workdir(workdir_url), cfg, key=key)
    # A plain Ray task (no Prefect inside to retry it): Ray retries a transient object-store error, as it does a lost worker.
    opts = ray_task_options(cfg.runtime) | {"num_cpus": training_cpus(cfg), "retry_exceptions": list(transient_errors())}
    if cfg.train.use_gpu:
        opts["num_gpus"] = 1
    remote = ray.remote(_encode_shard).options(**opts)
    results = ray.get([remote.remote(workdir_url, cfg.model_dump(mode="json"), shard) for shard in shards(todo, cfg.labels.chunk_size)])
    return {"encoded": [f for r in results for f in r["encoded"]], "tasks": len(results), "key": key,
            "devices": sorted({r["device"] for r in results})}


def _encode_shard(workdir_url: str, cfg: dict, video_ids: list[str]) -> dict:
    from tasks.preprocess import encode_clips

    config = Config.model_validate(cfg)
    use_reserved_cpus(training_cpus(config))
    return encode_clips(workdir_url, config, video_ids)


def _train_loop_per_worker(config: dict) -> None:
    import ray.train

    cfg = Config.model_validate(config["cfg"])
    use_reserved_cpus(training_cpus(cfg))
    out = run_training(config["workdir"], cfg, config["resume"], config["steps"], progress=False,
                       cache_key=config.get("cache_key"))
    ray.train.report({"latest": out["latest"] or "", "step": out["step"], "trained_steps": out["trained_steps"],
                      "encoded": out.get("encoded", 0)})


def training_cpus(cfg: Config) -> float:
    """The CPUs a training process (task, preprocess shard, Ray Train worker, ``fit-base``) reserves, and so its torch threads."""
    return cfg.train.cpus_per_worker or cfg.runtime.task_num_cpus


def train_with_ray_train(workdir_url: str, cfg: Config, resume: str | None, steps: int | None) -> dict:
    """DDP over ``train.num_workers`` Ray Train workers (GPUs when ``train.use_gpu``)."""
    import ray
    from pyarrow.fs import FSSpecHandler, PyFileSystem
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    if cfg.train.fit_base.enabled:
        raise ValueError("train.fit_base fits the tiny base in one process: train with train.num_workers=1 (the CPU demo), "
                         "or set train.fit_base.enabled=false with a real base (model.base_model_path)")
    cpus = training_cpus(cfg)
    need, have = cfg.train.num_workers * cpus, ray.cluster_resources().get("CPU", 0)
    if need > have and not ray_address(cfg.runtime):
        # a local Ray never grows: Ray Train would wait for the workers' CPUs forever
        raise ValueError(f"Ray Train needs {cfg.train.num_workers} workers x {cpus:g} CPUs = {need:g} CPUs, but the local "
                         f"Ray has {have:g}; lower train.num_workers or train.cpus_per_worker")
    prepared = preprocess_stage(workdir_url, cfg)  # once per clip, before any rank starts
    wd = Workdir(workdir_url)
    trainer = TorchTrainer(
        _train_loop_per_worker,
        train_loop_config={"workdir": workdir_url, "cfg": cfg.model_dump(mode="json"), "resume": resume, "steps": steps,
                           "cache_key": prepared["key"]},
        scaling_config=ScalingConfig(num_workers=cfg.train.num_workers, use_gpu=cfg.train.use_gpu,
                                     resources_per_worker={"CPU": cpus}),
        # Ray Train's own files go to the workdir's filesystem (its object store on s3://), not a disk the nodes
        # must share. A lost worker restarts the group up to runtime.max_retries times; each rank's run_training
        # then continues from the run's latest checkpoint in the workdir.
        run_config=RunConfig(name=f"draganything-train-{cfg.digest()}", storage_path=wd.path("cache", "ray_train"),
                             storage_filesystem=PyFileSystem(FSSpecHandler(wd.fs)),
                             failure_config=FailureConfig(max_failures=cfg.runtime.max_retries)),
    )
    result = trainer.fit()
    if result.error:
        raise result.error
    # Rank 0 wrote the checkpoints: the newest one of this config is the run's result.
    latest = latest_of_config(wd, cfg.digest())
    return {"workers": cfg.train.num_workers, "latest": None if latest is None else latest["checkpoint_id"],
            "step": None if latest is None else int(latest["step"]), "metrics": dict(result.metrics or {}),
            "encoded": len(prepared["encoded"])}


def check_training_resources(cfg: Config) -> None:
    """Refuse, before any work starts, a training process (task, shard or Ray Train worker) that no Ray node can hold."""
    if not cfg.runtime.check_resources:
        return
    from core.cluster import check_request
    from core.runtime import node_resources

    nodes = node_resources()
    gpu = 1 if cfg.train.use_gpu else 0
    key = "train.use_gpu" if gpu and not any(res.get("GPU") for res in nodes.values()) else "train.cpus_per_worker"
    check_request(nodes, {"CPU": training_cpus(cfg), "GPU": gpu}, key)


@flow(name="train", task_runner=ProjectRayTaskRunner())
def train_flow(workdir_url: str, config: str = "tiny", overrides: list[str] | None = None, resume: str | None = None,
               steps: int | None = None, progress: bool = True) -> dict:
    cfg = load_config(config, overrides)
    check_training_resources(cfg)  # before preprocessing: a request no node can meet would wait forever
    if cfg.train.num_workers > 1:
        return train_with_ray_train(workdir_url, cfg, resume, steps)
    prepared = preprocess_stage(workdir_url, cfg)
    opts = ray_task_options(cfg.runtime) | {"num_cpus": training_cpus(cfg)}
    if cfg.train.use_gpu:
        opts["num_gpus"] = 1
    with remote_options(**opts):
        return train_task.submit(workdir_url, cfg, resume, steps, progress, prepared["key"]).result()

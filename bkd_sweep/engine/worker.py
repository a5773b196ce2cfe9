"""The Ray Tune function trainable: runs one trial in a worker process.

"Trainable" here means Ray Tune's word for the function Tune runs per trial; that function
calls a *trial function* with run_trial's signature (``run_trial`` itself, or a stand-in that
tests and embedders pass as ``trial_fn``).

Per epoch the trial's ``report`` sends ``{bkd_kind: epoch, bkd_epoch: <EpochMetrics JSON>,
top1, ...}``; at the end one last report ``{bkd_kind: final, bkd_result: <TrialResult JSON>}``
carries the result to the driver (the scheduler and pruner ignore it).

Checkpoints are written once: run_trial keeps the trial's own (``last.pt``, ``best.pt``) in
``trials/<id>/ckpt`` of the storage root (local, shared or an object store), and a retried
trial resumes from there. A single-worker trial hands Ray no checkpoint (it would copy every
epoch's into its storage_path); only a multi-worker trial reports one to Ray Train, which
keeps the last.

With ``workers > 1`` the function starts a Ray Train ``TorchTrainer`` (gloo on CPU, nccl on
GPU) and fits it; every rank runs the trial under torch.distributed and rank 0's reports reach
Tune through Ray Train's TuneReportCallback.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from bkd_sweep.config import Study, TrialConfig
from bkd_sweep.engine.trial_files import CHECKPOINT_DIR, TRIALS_DIR
from bkd_sweep.records import CHECKPOINT_FILE, EpochMetrics, TrialResult
from bkd_sweep.storage import Location

KIND_KEY, EPOCH_KEY, RESULT_KEY = "bkd_kind", "bkd_epoch", "bkd_result"
TEACHER_KEY = "bkd_teacher"  # a teacher job: its index in the config, its report in the result
TrialFn = Callable[..., TrialResult]  # run_trial's signature


@dataclass(frozen=True)
class WorkerSetup:
    """What every trial's worker needs besides its own config (small and picklable)."""

    results_dir: str  # results/<study>: an absolute path or an object-store URI
    cache_dir: str  # the teacher cache (trained teachers, evaluations): path or URI
    cpu: float  # per worker
    gpu: float  # per worker
    workers: int
    cwd: str  # the driver's working directory (relative data paths resolve against it)
    train_storage: str  # Ray Train storage for multi-worker trials
    # each trial's config is built here from its params and seed: Tune writes the configs it
    # is given into its experiment state (JSON in the results folder), and a data root may
    # hold a credential
    study: Study


def epoch_payload(metrics: EpochMetrics) -> dict[str, Any]:
    return {KIND_KEY: "epoch", EPOCH_KEY: metrics.model_dump_json(), "epoch": metrics.epoch,
            "top1": metrics.top1, "top5": metrics.top5, "val_loss": metrics.val_loss,
            "loss": metrics.loss, "lr": metrics.lr}


def final_payload(result: TrialResult) -> dict[str, Any]:
    """The last report (Tune keeps it in its experiment state, JSON in the results folder)."""
    return {KIND_KEY: "final", RESULT_KEY: result.without_credentials().model_dump_json(),
            "status": result.status, "epochs_run": result.epochs_run}


def _default_trial_fn() -> TrialFn:
    from bkd_sweep.trial import run_trial

    return run_trial


def _as_given(folder: Location) -> Path | Location:
    """A Path for a local or shared folder (what trial functions have always received),
    else the Location."""
    return folder.local_path if folder.is_local else folder


def trial_checkpoints(setup: WorkerSetup, trial_id: str) -> Path | Location:
    """The trial's own checkpoint folder in the storage root: what a retry resumes from."""
    results = Location.of(setup.results_dir)
    return _as_given(results.child(TRIALS_DIR, trial_id, CHECKPOINT_DIR))


def _restore(checkpoint, directory: Path | Location) -> None:
    """Copy a Ray Train checkpoint into a local checkpoint dir unless it already has one."""
    if checkpoint is None or not isinstance(directory, Path) \
            or (directory / CHECKPOINT_FILE).exists():
        return
    directory.mkdir(parents=True, exist_ok=True)
    with checkpoint.as_directory() as src:
        for item in Path(src).iterdir():
            target = directory / item.name
            if item.is_dir():
                shutil.copytree(item, target, dirs_exist_ok=True)
            else:
                shutil.copy2(item, target)


def hide_gpus_unless_given(gpu: float) -> None:
    """A trial that asked Ray for no GPU runs on the CPU. Ray 2.60 no longer hides a node's
    GPUs from a worker given zero (RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO is off), so device
    ``auto`` would put every CPU trial of a GPU node on cuda:0, and its precision would
    depend on where it landed."""
    if gpu <= 0:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before torch first touches CUDA here


def set_threads(cpu: float) -> None:
    """torch's threads (and OpenMP's) = the CPUs Ray gave this worker."""
    threads = max(1, int(cpu))
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)


def make_tune_function(setup: WorkerSetup, trial_fn: TrialFn | None,
                       teacher_jobs: Sequence[str] = ()) -> Callable[[dict], None]:
    """The function trainable Tune runs for each trial (``trial_fn`` None = run_trial), and
    for each teacher job (``teacher_jobs[i]``: the teacher's config as JSON; the job's Tune
    config holds only i, as Tune writes configs into its state and a config may hold a
    credential)."""

    def bkd_trial(config: dict) -> None:
        from ray import tune

        if os.path.isdir(setup.cwd):
            os.chdir(setup.cwd)
        if TEACHER_KEY in config:
            report = prepare_teacher(setup, teacher_jobs[config[TEACHER_KEY]], config.get("nodes"))
            tune.report({KIND_KEY: "teacher", TEACHER_KEY: json.dumps(report)})
            return
        trial_config = setup.study.trial_config(config["params"], config["seed"])
        checkpoint_dir = trial_checkpoints(setup, config["trial_id"])
        cache_dir = _as_given(Location.of(setup.cache_dir))
        if setup.workers > 1:
            _run_distributed(setup, trial_fn, trial_config, config["trial_id"], checkpoint_dir,
                             cache_dir, config.get("nodes"))
            return
        hide_gpus_unless_given(setup.gpu)
        set_threads(setup.cpu)
        fn = trial_fn or _default_trial_fn()

        def report(metrics: EpochMetrics, _checkpoints: Path | Location | None) -> None:
            # no Ray checkpoint: the trial's own, in the storage root, is what a retry
            # resumes from, so Ray need not copy it each epoch
            tune.report(epoch_payload(metrics))

        result = fn(trial_config, report, checkpoint_dir=checkpoint_dir, cache_dir=cache_dir)
        tune.report(final_payload(result))

    return bkd_trial


def prepare_teacher(setup: WorkerSetup, config_json: str, nodes: list[str] | None) -> dict:
    """A teacher job in this trial's actor (teachers_first.teacher_task): here, or, when the
    trial only drives Train workers and holds no CPU or GPU itself, as a Ray task on one
    rank's resources (on ``nodes`` only, when given)."""
    from bkd_sweep.engine.teachers_first import teacher_task

    if setup.workers <= 1:
        hide_gpus_unless_given(setup.gpu)
        return teacher_task(config_json, setup.cache_dir, setup.cpu, setup.gpu)
    import ray

    from bkd_sweep.engine.placement import node_selector

    where = node_selector(nodes)
    task = ray.remote(max_retries=1)(teacher_task).options(
        num_cpus=setup.cpu, num_gpus=setup.gpu, **({"label_selector": where} if where else {}))
    return ray.get(task.remote(config_json, setup.cache_dir, setup.cpu, setup.gpu))


def _run_distributed(setup: WorkerSetup, trial_fn: TrialFn | None, trial_config: TrialConfig,
                     trial_id: str, checkpoint_dir: Path | Location,
                     cache_dir: Path | Location, nodes: list[str] | None = None) -> None:
    """Fit a TorchTrainer of ``setup.workers`` ranks inside this Tune trial (rank 0's
    checkpoint folder goes to Ray Train as its checkpoint, the last one kept), its ranks on
    ``nodes`` (ids) only when given (on a cluster: those that passed preflight)."""
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from bkd_sweep.engine.placement import node_selector
    from ray.tune.integration.ray_train import TuneReportCallback

    use_gpu = setup.gpu > 0
    per_worker = {"CPU": setup.cpu, **({"GPU": setup.gpu} if use_gpu else {})}

    def train_loop(_: dict) -> None:
        import torch.distributed as dist
        from ray.train import Checkpoint

        rank = ray.train.get_context().get_world_rank()
        hide_gpus_unless_given(setup.gpu)
        set_threads(setup.cpu)
        if rank == 0:
            _restore(ray.train.get_checkpoint(), checkpoint_dir)
        if dist.is_initialized():
            dist.barrier()
        fn = trial_fn or _default_trial_fn()

        def report(metrics: EpochMetrics, ckpt_dir: Path | Location | None) -> None:
            checkpoint = None
            if rank == 0 and isinstance(ckpt_dir, Path) and ckpt_dir.is_dir():
                checkpoint = Checkpoint.from_directory(str(ckpt_dir))
            ray.train.report(epoch_payload(metrics), checkpoint=checkpoint,
                             delete_local_checkpoint_after_upload=False)

        result = fn(trial_config, report, checkpoint_dir=checkpoint_dir, cache_dir=cache_dir)
        ray.train.report(final_payload(result))

    trainer = TorchTrainer(
        train_loop,
        scaling_config=ray.train.ScalingConfig(num_workers=setup.workers, use_gpu=use_gpu,
                                               resources_per_worker=per_worker,
                                               label_selector=node_selector(nodes)),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=ray.train.RunConfig(
            name=trial_id, storage_path=setup.train_storage,
            failure_config=ray.train.FailureConfig(max_failures=0),  # Tune retries the trial
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
            callbacks=[TuneReportCallback()]),
    )
    trainer.fit()

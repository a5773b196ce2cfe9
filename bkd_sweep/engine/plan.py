"""``plan``: what a sweep would run and roughly what it costs, in seconds, without Ray.

The estimate is deliberately coarse and says how it was made: FLOPs per trial from
``bkd_sweep.engine.costs`` (students, teachers and BKD's restoration block, counted densely).
Device-hours = FLOPs / an assumed effective throughput per device (GPU 20 TFLOP/s, CPU
50 GFLOP/s per trial), plus a fixed 20 s per trial for start-up, data loading and energy
measurement (what dominates tiny CPU studies). Pruning is ignored (an upper bound), and so
is spike sparsity.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Any

from bkd_sweep import space
from bkd_sweep.config import CategoricalParam, LoadedStudy, StudyError
from bkd_sweep.engine.costs import arch_gflops, trial_cost  # noqa: F401 (plan's API)
from bkd_sweep.records import trial_id_of

GPU_TFLOPS = 20.0  # effective training throughput of one GPU (mixed precision, real kernels)
CPU_GFLOPS = 50.0  # effective throughput of one trial's CPU cores
LIST_LIMIT = 40  # list the trials when there are at most this many
TRIAL_OVERHEAD_S = 20.0  # start-up, data loading, energy measurement per trial


def grid_run_order(study, trials: list[tuple[dict[str, Any], int]]
                   ) -> list[tuple[dict[str, Any], int]]:
    """The order a grid sweep runs its (params, seed) trials in: trials that need no teacher
    first (they run while the teachers are prepared), then the others; within each group the
    longest first by ``trial_cost`` (longest-processing-time first: in grid order the
    costliest cells, e.g. the largest T with BKD, came last and one ran alone at the end).
    Invalid combinations go first: they fail at once. Stable, so equal costs keep grid
    order. Only an unpruned grid (the default) is reordered: there every trial runs to the
    end whatever the order, while a pruner's verdicts depend on which trials finished first,
    so a pruned grid keeps the order it was written in."""
    if study.search.pruner.name != "none":
        return list(trials)

    def key(item: tuple[int, tuple[dict[str, Any], int]]) -> tuple[int, float, int]:
        index, (params, seed) = item
        try:
            config = study.trial_config(params, seed)
        except StudyError:
            return 0, 0.0, index
        return 1 + (config.distill.mode != "none"), -trial_cost(config).gflop, index

    return [trial for _, trial in sorted(enumerate(trials), key=key)]


@dataclass
class PlannedTrial:
    trial_id: str | None  # known for grid sweeps
    params: dict[str, Any]
    seed: int
    gflop: float
    device_hours: float


@dataclass
class Plan:
    """What ``bkd-sweep plan`` prints: trials, resources, concurrency and a cost estimate."""

    study: str
    sampler: str
    pruner: str
    n_trials: int
    trials: list[PlannedTrial]  # every trial (grid), or one per sampled-space configuration
    trials_listed: bool  # False when the trials are sampled at run time
    per_trial: dict[str, float]  # cpu, gpu (per worker), workers
    max_concurrent: int | None  # None: as many as the cluster fits
    where: str  # "this machine (N cpus, M gpus)" or the cluster planned for
    fits_here: int  # trials that fit there at once
    device: str  # "gpu" or "cpu"
    throughput_gflops: float  # assumed per device
    device_hours: float
    wall_hours: float  # device-hours spread over the concurrent trials' devices
    method: str
    notes: list[str] = field(default_factory=list)

    def render(self) -> str:
        lines = [f"study {self.study}: {self.n_trials} trials (sampler {self.sampler}, "
                 f"pruner {self.pruner})"]
        if self.trials_listed and self.n_trials <= LIST_LIMIT:
            for t in self.trials:
                params = " ".join(f"{k}={v}" for k, v in t.params.items())
                lines.append(f"  {t.trial_id} seed={t.seed} {params}  "
                             f"~{t.device_hours:.3g} {self.device}-h")
        elif not self.trials_listed:
            lines.append(f"  (configurations are sampled at run time; costs averaged over "
                         f"{len(self.trials)} representative configuration(s))")
        else:
            lines.append(f"  ({self.n_trials} trials; not listed above {LIST_LIMIT})")
        r = self.per_trial
        per = "per worker, " if r["workers"] > 1 else ""
        lines.append(f"resources: {r['cpu']:g} cpu + {r['gpu']:g} gpu {per}x {int(r['workers'])} "
                     f"worker(s) per trial")
        conc = (f"{self.max_concurrent} (resources.max_concurrent)" if self.max_concurrent
                else "as many as the cluster fits")
        lines.append(f"max concurrent trials: {conc}; {self.where} fits {self.fits_here} at once")
        lines.append(f"estimate: {self.device_hours:.3g} {self.device}-hours "
                     f"(~{self.wall_hours:.3g} h wall at {self._concurrency()} concurrent "
                     f"trial(s)), assuming {self._throughput_text()} per device")
        lines.append(f"method: {self.method}")
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)

    def _throughput_text(self) -> str:
        if self.device == "gpu":
            return f"{self.throughput_gflops / 1000:g} TFLOP/s"
        return f"{self.throughput_gflops:g} GFLOP/s"

    def _concurrency(self) -> int:
        return max(1, min(self.n_trials, self.max_concurrent or max(self.fits_here, 1)))


METHOD = ("FLOPs = epochs x (n_train x (3 x F_s x T_s + F_t x T_t + 3 x F_g) "
          "+ n_val x F_s x T_s) "
          "+ n_test x F_s x T_s (test once), F_g = BKD's align + restoration block (bkd, mixed), "
          "F from a coarse per-architecture table scaled by (size/ref)^2, plus one-off teacher "
          f"training; device-hours = FLOPs / assumed throughput + {TRIAL_OVERHEAD_S:g} s per "
          "trial; pruning ignored (upper bound)")


@dataclass(frozen=True)
class Cluster:
    """A cluster to plan for: ``nodes`` x ``gpus`` per node (and ``cpus`` per node, when
    given; otherwise CPUs are assumed not to limit)."""

    nodes: int
    gpus: int
    cpus: int | None = None

    @classmethod
    def parse(cls, text: str) -> "Cluster":
        """``8x8`` (8 nodes x 8 GPUs) or ``8x8x64`` (and 64 CPUs per node)."""
        parts = text.lower().split("x")
        if len(parts) not in (2, 3) or not all(p.isdigit() and int(p) > 0 for p in parts):
            raise ValueError(f"--cluster {text!r}: expected NODESxGPUS or NODESxGPUSxCPUS "
                             "with positive whole numbers, e.g. 8x8")
        return cls(*(int(p) for p in parts))

    def fits(self, per_trial) -> int:
        """Trials running at once: each node fits its own share (a trial stays on one node)."""
        cpus = self.cpus if self.cpus is not None else 10**9
        return self.nodes * trials_fitting(per_trial, cpus, self.gpus)

    def describe(self) -> str:
        cpus = f", {self.cpus} cpus" if self.cpus is not None else ""
        return (f"cluster {self.nodes} nodes x {self.gpus} gpus{cpus} "
                f"({self.nodes * self.gpus} gpus)")


def machine_resources() -> dict[str, int]:
    """This machine's CPUs and NVIDIA GPUs (nvidia-smi; no torch import)."""
    gpus = 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        gpus = len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    elif shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True,
                                 timeout=10)
            gpus = sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))
        except (OSError, subprocess.SubprocessError):
            gpus = 0
    return {"cpus": os.cpu_count() or 1, "gpus": gpus}


def trials_fitting(per_trial, cpus: float, gpus: float) -> int:
    """How many trials fit at once on ``cpus`` / ``gpus`` (cpu, gpu are per worker)."""
    need_cpu = per_trial.cpu * per_trial.workers
    need_gpu = per_trial.gpu * per_trial.workers
    fits = math.floor(cpus / need_cpu + 1e-9) if need_cpu else 10**6
    if need_gpu:
        fits = min(fits, math.floor(gpus / need_gpu + 1e-9))
    return max(0, fits)


def _representative_configs(loaded: LoadedStudy) -> tuple[list[tuple[dict, int]], bool]:
    """(params, seed) to cost: the exact trials of a grid; otherwise the configurations of the
    finite part of the space (ranges at their midpoint), each once."""
    search = loaded.study.search
    if search.sampler == "grid":
        return grid_run_order(loaded.study, space.grid_trials(search)), True
    finite = search.model_copy(update={"params": {
        path: spec if isinstance(spec, CategoricalParam) else
        CategoricalParam(values=[_midpoint(spec)], when=spec.when)
        for path, spec in search.params.items()}})
    configs = space.grid(finite)
    if len(configs) > 2000:
        configs = [{}]
    return [(c, search.seeds[0]) for c in configs], False


def _midpoint(spec) -> float | int:
    if spec.log:
        mid = math.sqrt(spec.low * spec.high)
    else:
        mid = (spec.low + spec.high) / 2
    return int(round(mid)) if spec.is_int else mid


def _planned_trials(study, configs: list[tuple[dict, int]], exact: bool, throughput: float,
                    notes: list[str], teacher_costs: dict[str, float]) -> list[PlannedTrial]:
    """Each (params, seed) costed; invalid combinations and guesses noted in ``notes``, the
    one-off teacher trainings collected in ``teacher_costs`` (GFLOPs by teacher)."""
    trials = []
    for index, (params, seed) in enumerate(configs):
        try:
            config = study.trial_config(params, seed)
        except StudyError as exc:
            notes.append(f"skipped an invalid combination: {exc.one_line()}")
            continue
        cost = trial_cost(config)
        for note in cost.notes:
            if note not in notes:
                notes.append(note)
        if cost.teacher_key:
            teacher_costs[cost.teacher_key] = cost.teacher_train_gflop
        hours = (cost.gflop / throughput + TRIAL_OVERHEAD_S) / 3600
        trials.append(PlannedTrial(trial_id_of(index) if exact else None, params, seed,
                                   cost.gflop, hours))
    return trials


def plan(loaded: LoadedStudy, cluster: Cluster | None = None) -> Plan:
    """The trials of a study, its resources and concurrency, and a device-hour estimate
    (on this machine, or on ``cluster``)."""
    study = loaded.study
    search = study.search
    n_trials = space.count_trials(search)
    per_trial = study.resources.per_trial
    device = "gpu" if per_trial.gpu > 0 else "cpu"
    throughput = GPU_TFLOPS * 1000 if device == "gpu" else CPU_GFLOPS
    devices_per_trial = per_trial.workers * (max(per_trial.gpu, 1e-9) if device == "gpu" else 1)
    configs, exact = _representative_configs(loaded)
    notes: list[str] = []
    teacher_costs: dict[str, float] = {}
    trials = _planned_trials(study, configs, exact, throughput, notes, teacher_costs)
    if not trials:
        raise StudyError("no valid trial configuration to plan", field="search")
    per_trial_hours = [t.device_hours for t in trials]
    if exact:
        total_hours = sum(per_trial_hours)
    else:
        total_hours = n_trials * sum(per_trial_hours) / len(per_trial_hours)
        notes.append("sampled space: cost = n_trials x the mean over the listed "
                     "configurations (continuous ranges at their midpoints)")
    teacher_hours = sum(teacher_costs.values()) / throughput / 3600
    if teacher_costs:
        notes.append(f"includes one-off teacher training ({len(teacher_costs)} teacher(s), "
                     f"~{teacher_hours:.3g} {device}-h)")
    total_hours += teacher_hours
    machine = machine_resources()
    fits = trials_fitting(per_trial, machine["cpus"], machine["gpus"])
    where = f"this machine ({machine['cpus']} cpus, {machine['gpus']} gpus)"
    if cluster is not None:
        fits, where = cluster.fits(per_trial), cluster.describe()
    if fits == 0:
        notes.append(f"{where} cannot run one trial (needs "
                     f"{per_trial.cpu * per_trial.workers:g} cpus, "
                     f"{per_trial.gpu * per_trial.workers:g} gpus): use a cluster")
    concurrency = max(1, min(n_trials, study.resources.concurrency_cap or max(fits, 1)))
    wall = total_hours / (concurrency * devices_per_trial)
    return Plan(
        study=study.name, sampler=search.sampler, pruner=search.pruner.name, n_trials=n_trials,
        trials=trials, trials_listed=exact,
        per_trial={"cpu": per_trial.cpu, "gpu": per_trial.gpu, "workers": per_trial.workers},
        max_concurrent=study.resources.concurrency_cap, where=where, fits_here=fits,
        device=device, throughput_gflops=throughput, device_hours=total_hours,
        wall_hours=wall, method=METHOD, notes=notes)

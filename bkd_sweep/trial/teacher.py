"""The teacher of a trial: loaded from a local checkpoint, or trained once and cached.

``checkpoint: train`` trains the teacher on the study's data with its recipe the first time
any trial asks for it, and caches the weights under ``<cache_dir>/teachers/`` keyed by a hash
of (arch, data, recipe); a file lock makes concurrent trials on one machine wait for the
first instead of training their own copy.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from bkd_sweep.data import DataBundle, first_samples, make_loaders
from bkd_sweep.energy import measure_with
from bkd_sweep.models import (Teacher, build_teacher_network, load_weights, reset,
                              wrap_teacher)
from bkd_sweep.config import TrialConfig
from bkd_sweep.fileio import file_lock, save_torch_atomic, write_json_atomic
from bkd_sweep.preflight import teacher_checkpoint_missing
from bkd_sweep.settings import cache_dir_for, settings
from bkd_sweep.trial.environment import seed_everything
from bkd_sweep.trial.optim import make_optimizer, make_scheduler

log = logging.getLogger(__name__)

TEACHER_SEED = 0  # every trial of a study shares one teacher, whatever its own seed


@dataclass
class TeacherInfo:
    teacher: Teacher | None  # None when the trial does not distil
    val_top1: float | None  # measured on the study's val split (%); None without a teacher
    test_top1: float | None  # measured on its test split (%)
    energy_mj: float | None  # per sample, by the same code path as the student's
    warnings: list[str] = field(default_factory=list)


def default_cache_dir() -> Path:
    """The cache when the caller names none: that of the results root in force."""
    return cache_dir_for(settings().results_dir or Path.cwd() / "results")


def teacher_cache_key(config: TrialConfig) -> str:
    """Hash of what determines a trained teacher: its arch/recipe and the data it sees."""
    teacher = config.teacher.model_dump(mode="json", exclude={"checkpoint", "accuracy"})
    data = config.data.model_dump(mode="json", exclude={"num_workers", "eval_batch_size"})
    neuron = config.student.neuron.model_dump(mode="json") if config.teacher.timesteps else None
    blob = json.dumps({"teacher": teacher, "data": data, "neuron": neuron}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@torch.no_grad()
def evaluate_teacher(teacher: Teacher, loader, device: torch.device) -> float:
    teacher.eval()
    correct = total = 0
    for images, targets in loader:
        logits = teacher(images.to(device)).logits
        correct += int((logits.argmax(1).cpu() == targets).sum())
        total += targets.shape[0]
    return 100.0 * correct / max(1, total)


def _train_network(net: nn.Module, config: TrialConfig, bundle: DataBundle,
                   device: torch.device) -> Teacher:
    """Plain supervised training of the teacher network with the study's teacher recipe;
    returns it wrapped (frozen). Inputs go through the wrapper's own preparation (resize,
    channels, frames) so the teacher is trained on exactly what it later sees."""
    teacher = wrap_teacher(net, config.teacher, image_size=bundle.image_size)
    net.requires_grad_(True)
    recipe = config.teacher.train
    data_cfg = config.data.model_copy(update={"batch_size": recipe.batch_size
                                              or config.data.batch_size})
    train_loader = make_loaders(bundle, data_cfg, seed=TEACHER_SEED).train
    optimizer = make_optimizer(net, recipe.optimizer)
    scheduler = make_scheduler(optimizer, recipe, len(train_loader), recipe.optimizer.lr)
    net.to(device).train()
    for _ in range(recipe.epochs):
        for images, targets in train_loader:
            images, targets = images.to(device), targets.to(device)
            logits = net(teacher.prepare(images))
            loss = nn.functional.cross_entropy(logits, targets,
                                               label_smoothing=recipe.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            reset(net)
    net.requires_grad_(False)
    net.eval()
    return teacher


def _build(config: TrialConfig, bundle: DataBundle) -> nn.Module:
    return build_teacher_network(config.teacher, num_classes=bundle.num_classes,
                                 in_channels=bundle.in_channels, image_size=bundle.image_size,
                                 student_neuron=config.student.neuron)


def trained_teacher_path(config: TrialConfig, bundle: DataBundle, device: torch.device,
                         cache_dir: Path) -> tuple[Path, bool]:
    """The cached weights for ``checkpoint: train``, training them first if no trial has
    (the second value says whether this call trained them)."""
    key = teacher_cache_key(config)
    folder = cache_dir / "teachers"
    weights = folder / f"{config.teacher.arch}-{key}.pt"
    meta_path = weights.with_suffix(".json")
    with file_lock(folder / f"{key}.lock"):
        if weights.exists() and meta_path.exists():
            return weights, False
        log.info("training teacher %s once (cache key %s)", config.teacher.arch, key)
        started = time.perf_counter()
        rng = torch.get_rng_state()
        seed_everything(TEACHER_SEED)
        net = _build(config, bundle)
        _train_network(net, config, bundle, device)
        torch.set_rng_state(rng)
        save_torch_atomic({k: v.cpu() for k, v in net.state_dict().items()}, weights)
        write_json_atomic({
            "arch": config.teacher.arch, "key": key,
            "train_seconds": time.perf_counter() - started,
            "recipe": config.teacher.train.model_dump(mode="json")}, meta_path)
    return weights, True


def prepare_teacher(config: TrialConfig, bundle: DataBundle, *, device: torch.device,
                    cache_dir: Path | None = None, load: bool = True) -> TeacherInfo:
    """Build the frozen teacher for a distilling trial (``load``), its val and test accuracy
    (always measured, cached per weights file and data) and its energy.

    A trial without distillation gets no teacher; an ANN teacher's energy needs no weights
    (dense MACs), so it is still reported for the energy ratio.
    """
    cfg = config.teacher
    cache_dir = Path(cache_dir).resolve() if cache_dir else default_cache_dir()
    energy_inputs = first_samples(bundle.val, config.energy.samples)
    if not load:
        energy = None
        if cfg.timesteps is None:
            teacher = wrap_teacher(_build(config, bundle), cfg, image_size=bundle.image_size)
            energy = _teacher_energy(teacher, energy_inputs, config, timesteps=1,
                                     event_input=bundle.is_event)
        return TeacherInfo(None, None, None, energy)
    problem = teacher_checkpoint_missing(config.distill.mode, cfg.checkpoint)
    if problem:
        raise ValueError(f"teacher.checkpoint: {problem}")
    net = _build(config, bundle)
    if cfg.checkpoint == "train":
        weights, _ = trained_teacher_path(config, bundle, device, cache_dir)
    else:
        weights = Path(cfg.checkpoint)
    load_weights(net, weights)
    teacher = wrap_teacher(net, cfg, image_size=bundle.image_size).to(device)
    expected = teacher_normalization(config, net)
    if expected is not None and bundle.mean is not None and bundle.std is not None:
        teacher.set_input_normalization(bundle.mean, bundle.std, *expected)
    val_top1, test_top1 = _measured_accuracy(teacher, config, bundle, device, cache_dir, weights)
    energy = _teacher_energy(teacher, energy_inputs.to(device), config,
                             timesteps=cfg.timesteps or 1, event_input=bundle.is_event)
    info = TeacherInfo(teacher, val_top1, test_top1, energy)
    if cfg.accuracy is not None and abs(cfg.accuracy - test_top1) > 1.0:
        info.warnings.append(f"teacher.accuracy says {cfg.accuracy:.2f} but the teacher "
                             f"measures {test_top1:.2f} on test ({val_top1:.2f} on val) here; "
                             "the measured values are recorded")
        log.warning(info.warnings[-1])
    return info


def teacher_normalization(config: TrialConfig,
                          net: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """The (mean, std) a teacher's weights expect, when it is not the data's own: given in
    the study, or timm's pretrained config for a timm model loaded from a file. A teacher
    trained here (``checkpoint: train``) saw the data's normalization: None."""
    cfg = config.teacher
    if cfg.mean is not None and cfg.std is not None:
        return tuple(cfg.mean), tuple(cfg.std)
    if cfg.checkpoint in (None, "train") or cfg.timesteps is not None:
        return None
    pretrained = getattr(net, "pretrained_cfg", None) or {}
    if pretrained.get("mean") and pretrained.get("std"):
        return tuple(pretrained["mean"]), tuple(pretrained["std"])
    return None


def _teacher_energy(teacher: Teacher, inputs: torch.Tensor, config: TrialConfig,
                    timesteps: int, event_input: bool) -> float:
    return measure_with(config, teacher, inputs, event_input, timesteps=timesteps).energy_mj


def _measured_accuracy(teacher: Teacher, config: TrialConfig, bundle: DataBundle,
                       device: torch.device, cache_dir: Path,
                       weights: Path) -> tuple[float, float]:
    """(val, test) top-1 of a teacher, evaluated once per (weights file, data) and cached."""
    stat = weights.stat()
    blob = json.dumps({"file": str(weights.resolve()), "size": stat.st_size,
                       "mtime": stat.st_mtime_ns, "teacher": cfg_dump(config)}, sort_keys=True)
    key = hashlib.sha256(blob.encode()).hexdigest()[:16]
    path = cache_dir / "teacher_eval" / f"{key}.json"
    with file_lock(cache_dir / "teacher_eval" / f"{key}.lock"):
        if path.exists():
            cached = json.loads(path.read_text())
            if "test_top1" in cached:
                return float(cached["val_top1"]), float(cached["test_top1"])
        loaders = make_loaders(bundle, config.data, seed=TEACHER_SEED)
        val_top1 = evaluate_teacher(teacher, loaders.val, device)
        test_top1 = evaluate_teacher(teacher, loaders.test, device)
        write_json_atomic({"val_top1": val_top1, "test_top1": test_top1,
                           "file": str(weights)}, path)
        return val_top1, test_top1


def cfg_dump(config: TrialConfig) -> dict:
    return {"teacher": config.teacher.model_dump(mode="json"),
            "data": config.data.model_dump(mode="json", exclude={"num_workers"})}

"""The teacher of a trial: loaded from a local checkpoint, or trained once and cached.

``checkpoint: train`` trains the teacher on the study's data with its own recipe (optimizer,
schedule, augmentation) the first time it is asked for, and caches the weights in the
teacher cache (``teacher_cache.py``: a local or shared folder, or an object store) keyed by
a hash of (arch, data, recipe). ``ensure_teacher`` does that (and the evaluation) before a
sweep's trials; a trial that finds no cached teacher trains it itself, under a file lock in
a local folder so concurrent trials wait for the first.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.data import DataLoader

from bkd_sweep.config import TrialConfig
from bkd_sweep.data import DataBundle, build_data, first_samples, make_loaders, make_mixup
from bkd_sweep.energy import measure_with
from bkd_sweep.fileio import torch_bytes
from bkd_sweep.models import Teacher, build_teacher_network, reset, wrap_teacher
from bkd_sweep.models.weights import load_weights_from_bytes, read_weights_file
from bkd_sweep.preflight import teacher_checkpoint_missing
from bkd_sweep.trial.environment import seed_everything
from bkd_sweep.trial.optim import make_optimizer, make_scheduler
from bkd_sweep.trial.teacher_cache import (CacheWhere, TeacherCache, evaluation_key,
                                           teacher_augment, teacher_cache_key)

log = logging.getLogger(__name__)

TEACHER_SEED = 0  # every trial of a study shares one teacher, whatever its own seed
DATA_SPLIT_SEED = 0  # one split for every trial of a study and its teacher
# the per-sample augmentations baked into a dataset's train transform (mixup is per batch)
_TRANSFORM_FIELDS = ("crop_flip", "randaugment", "random_erasing")


@dataclass
class TeacherInfo:
    teacher: Teacher | None  # None when the trial does not distil
    val_top1: float | None  # measured on the study's val split (%); None without a teacher
    test_top1: float | None  # measured on its test split (%)
    energy_mj: float | None  # per sample, by the same code path as the student's
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class TeacherWeights:
    data: bytes  # the saved checkpoint, as read
    source: str  # where it was read from (a path or a URI), for messages and records
    trained: bool  # this process trained them (else: a file, or the cache had them)


@dataclass(frozen=True)
class TeacherReport:
    """What ``ensure_teacher`` did and measured (for the driver's log and records)."""

    arch: str
    cache_key: str | None  # None for a teacher loaded from a file
    weights: str  # path or URI of the weights
    trained: bool  # this call trained the teacher (False: it was cached, or is a file)
    val_top1: float
    test_top1: float
    seconds: float  # wall seconds of this call: training (if any) and evaluation


def study_data(config: TrialConfig, *, teacher_frames: bool) -> DataBundle:
    """The data of every trial of a study and of its teacher: one split (the seed varies init
    and order, not the data, so a cached teacher never saw a trial's validation images).
    Event data has frames for the student's T, or the teacher's when longer
    (``teacher_frames``: a teacher is used)."""
    teacher_t = config.teacher.timesteps if teacher_frames else None
    frames = max(config.student.timesteps, teacher_t or 0)
    return build_data(config.data, seed=DATA_SPLIT_SEED, timesteps=frames)


@torch.no_grad()
def evaluate_teacher(teacher: Teacher, loader, device: torch.device) -> float:
    teacher.eval()
    correct = total = 0
    for images, targets in loader:
        logits = teacher(images.to(device)).logits
        correct += int((logits.argmax(1).cpu() == targets).sum())
        total += targets.shape[0]
    return 100.0 * correct / max(1, total)


def teacher_train_loader(config: TrialConfig, bundle: DataBundle) -> DataLoader:
    """The teacher's training batches: the study's split with the teacher's augmentation and
    batch size. The per-sample transform is built with the dataset, so a teacher augmenting
    differently from the study gets the same split rebuilt with its own transform."""
    augment = teacher_augment(config)
    data_cfg = config.data.model_copy(update={
        "batch_size": config.teacher.train.batch_size or config.data.batch_size,
        "augment": augment})
    study_augment = config.data.augment
    if any(getattr(augment, f) != getattr(study_augment, f) for f in _TRANSFORM_FIELDS):
        bundle = build_data(data_cfg, seed=DATA_SPLIT_SEED, timesteps=bundle.frames or 1)
    return make_loaders(bundle, data_cfg, seed=TEACHER_SEED).train


def _train_network(net: nn.Module, config: TrialConfig, bundle: DataBundle,
                   device: torch.device) -> Teacher:
    """Plain supervised training of the teacher network with its recipe (optimizer,
    schedule, augmentation with mixup/cutmix, label smoothing); returns it wrapped (frozen).
    Inputs go through the wrapper's own preparation (resize, channels, frames) so the
    teacher is trained on exactly what it later sees."""
    teacher = wrap_teacher(net, config.teacher, image_size=bundle.image_size)
    net.requires_grad_(True)
    recipe = config.teacher.train
    augment = teacher_augment(config)
    train_loader = teacher_train_loader(config, bundle)
    mixup = make_mixup(augment, bundle.num_classes)
    net.to(device).train()  # before the optimizer: it picks its kernel by the device
    optimizer = make_optimizer(net, recipe.optimizer)
    scheduler = make_scheduler(optimizer, recipe, len(train_loader), recipe.optimizer.lr)
    for epoch in range(1, recipe.epochs + 1):
        off = augment.mixup_off_epoch
        mixing = mixup if mixup is not None and (off is None or epoch <= off) else None
        for images, targets in train_loader:
            images, targets = images.to(device), targets.to(device)
            if mixing is not None:  # soft targets, already label-smoothed
                images, targets = mixing(images, targets)
            logits = net(teacher.prepare(images))
            smoothing = 0.0 if mixing is not None else recipe.label_smoothing
            loss = nn.functional.cross_entropy(logits, targets, label_smoothing=smoothing)
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


def trained_teacher_weights(config: TrialConfig, bundle: DataBundle, device: torch.device,
                            cache: TeacherCache) -> TeacherWeights:
    """The cached weights for ``checkpoint: train``, training and storing them first when
    the cache has none (``trained`` says whether this call did)."""
    key = teacher_cache_key(config)
    with cache.training_lock(config):
        if cache.has_trained(config):
            return TeacherWeights(cache.read_trained(config), cache.weights_uri(config), False)
        if not cache.root.is_local:  # no lock there: concurrent trials would each train
            log.warning("teacher %s (key %s) is not in the cache %s; training it here "
                        "(call ensure_teacher before the trials)", config.teacher.arch, key,
                        cache.root)
        log.info("training teacher %s once (cache key %s)", config.teacher.arch, key)
        started = time.perf_counter()
        rng = torch.get_rng_state()
        seed_everything(TEACHER_SEED)
        net = _build(config, bundle)
        _train_network(net, config, bundle, device)
        torch.set_rng_state(rng)
        weights = torch_bytes({k: v.cpu() for k, v in net.state_dict().items()})
        cache.store_trained(config, weights, {
            "arch": config.teacher.arch, "key": key,
            "train_seconds": time.perf_counter() - started,
            "recipe": config.teacher.train.model_dump(mode="json"),
            "augment": teacher_augment(config).model_dump(mode="json")})
    return TeacherWeights(weights, cache.weights_uri(config), True)


def _teacher_weights(config: TrialConfig, bundle: DataBundle, device: torch.device,
                     cache: TeacherCache) -> TeacherWeights:
    if config.teacher.checkpoint == "train":
        return trained_teacher_weights(config, bundle, device, cache)
    path = config.teacher.checkpoint
    return TeacherWeights(read_weights_file(path), str(path), False)


def _loaded_teacher(config: TrialConfig, bundle: DataBundle, device: torch.device,
                    cache: TeacherCache) -> tuple[Teacher, TeacherWeights]:
    """The frozen teacher with its weights (trained first if need be), on ``device``."""
    problem = teacher_checkpoint_missing(config.distill.mode, config.teacher.checkpoint)
    if problem or config.teacher.checkpoint is None:
        raise ValueError(f"teacher.checkpoint: {problem or 'not set'}")
    net = _build(config, bundle)
    weights = _teacher_weights(config, bundle, device, cache)
    load_weights_from_bytes(net, weights.data, weights.source)
    teacher = wrap_teacher(net, config.teacher, image_size=bundle.image_size).to(device)
    expected = teacher_normalization(config, net)
    if expected is not None and bundle.mean is not None and bundle.std is not None:
        teacher.set_input_normalization(bundle.mean, bundle.std, *expected)
    return teacher, weights


def prepare_teacher(config: TrialConfig, bundle: DataBundle, *, device: torch.device,
                    cache_dir: TeacherCache | CacheWhere | None = None,
                    load: bool = True) -> TeacherInfo:
    """Build the frozen teacher for a distilling trial (``load``), its val and test accuracy
    (always measured, cached per weights content and data) and its energy.

    A trial without distillation gets no teacher; an ANN teacher's energy needs no weights
    (dense MACs), so it is still reported for the energy ratio.
    """
    cfg = config.teacher
    energy_inputs = first_samples(bundle.val, config.energy.samples)
    if not load:
        energy = None
        if cfg.timesteps is None:
            teacher = wrap_teacher(_build(config, bundle), cfg, image_size=bundle.image_size)
            energy = _teacher_energy(teacher, energy_inputs, config, timesteps=1,
                                     event_input=bundle.is_event)
        return TeacherInfo(None, None, None, energy)
    cache = TeacherCache.of(cache_dir)
    teacher, weights = _loaded_teacher(config, bundle, device, cache)
    val_top1, test_top1 = _measured_accuracy(teacher, config, bundle, device, cache, weights)
    energy = _teacher_energy(teacher, energy_inputs.to(device), config,
                             timesteps=cfg.timesteps or 1, event_input=bundle.is_event)
    info = TeacherInfo(teacher, val_top1, test_top1, energy)
    if cfg.accuracy is not None and abs(cfg.accuracy - test_top1) > 1.0:
        info.warnings.append(f"teacher.accuracy says {cfg.accuracy:.2f} but the teacher "
                             f"measures {test_top1:.2f} on test ({val_top1:.2f} on val) here; "
                             "the measured values are recorded")
        log.warning(info.warnings[-1])
    return info


def ensure_teacher(config: TrialConfig, cache: TeacherCache | CacheWhere,
                   device: torch.device | str = "cpu") -> TeacherReport:
    """Train (``checkpoint: train``) and evaluate a study's teacher unless the cache already
    has both: what a driver runs once before the trials, so that they only read the cache
    (the way to share a teacher through an object store, which has no lock).

    ``config`` is any trial config of the study with this teacher (one call per distinct
    ``teacher_cache_key``); the data are built as a distilling trial's.
    """
    started = time.perf_counter()
    device = torch.device(device)
    cache = TeacherCache.of(cache)
    bundle = study_data(config, teacher_frames=True)
    teacher, weights = _loaded_teacher(config, bundle, device, cache)
    val_top1, test_top1 = _measured_accuracy(teacher, config, bundle, device, cache, weights)
    key = teacher_cache_key(config) if config.teacher.checkpoint == "train" else None
    return TeacherReport(arch=config.teacher.arch, cache_key=key, weights=weights.source,
                         trained=weights.trained, val_top1=val_top1, test_top1=test_top1,
                         seconds=time.perf_counter() - started)


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
                       device: torch.device, cache: TeacherCache,
                       weights: TeacherWeights) -> tuple[float, float]:
    """(val, test) top-1 of a teacher, evaluated once per (weights content, data) and cached."""
    key = evaluation_key(weights.data, config)
    with cache.evaluation_lock(key):
        cached = cache.read_evaluation(key)
        if cached is not None:
            return float(cached["val_top1"]), float(cached["test_top1"])
        loaders = make_loaders(bundle, config.data, seed=TEACHER_SEED)
        val_top1 = evaluate_teacher(teacher, loaders.val, device)
        test_top1 = evaluate_teacher(teacher, loaders.test, device)
        cache.store_evaluation(key, {"val_top1": val_top1, "test_top1": test_top1,
                                     "file": weights.source})
        return val_top1, test_top1

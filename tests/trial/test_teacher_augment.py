"""teacher.train.augment (#11): a teacher trains with its own augmentation (None: the
study's), on the study's split, and its cache key says which."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import Subset

from bkd_sweep.config import StudyError, TrialConfig, apply_overrides
from bkd_sweep.data import make_loaders
from bkd_sweep.trial.teacher import ensure_teacher, study_data, teacher_train_loader
from bkd_sweep.trial.teacher_cache import TeacherCache, teacher_cache_key

BASE = {
    "data.dataset": "digits", "data.batch_size": 32, "data.limit_train": 256,
    "data.limit_val": 64, "student.timesteps": 2, "teacher.arch": "cnn_small",
    "teacher.checkpoint": "train", "teacher.feature": "features", "teacher.train.epochs": 1,
    "distill.mode": "logit", "energy.samples": 8,
}


def make_config(overrides: dict | None = None) -> TrialConfig:
    return apply_overrides(TrialConfig(), {**BASE, **(overrides or {})})


def train_samples(loader):
    """(the per-sample train transform, the labels) of a loader's dataset."""
    dataset, indices = loader.dataset, None
    if isinstance(dataset, Subset):
        dataset, indices = dataset.dataset, list(dataset.indices)
    labels = dataset.labels if indices is None else dataset.labels[indices]
    return dataset.transform, labels.tolist()


def test_teacher_train_loader_uses_the_teachers_augmentation_on_the_studys_split():
    config = make_config({"teacher.train.augment": {"crop_flip": True, "random_erasing": 0.5}})
    bundle = study_data(config, teacher_frames=True)
    teacher_tf, teacher_labels = train_samples(teacher_train_loader(config, bundle))
    study_tf, study_labels = train_samples(make_loaders(bundle, config.data, seed=0).train)
    assert teacher_tf.crop_pad > 0 and teacher_tf.erasing is not None
    assert study_tf.crop_pad == 0 and study_tf.erasing is None  # the student's is unchanged
    assert teacher_labels == study_labels  # the same samples, in the same split

    inherited = make_config({"data.augment.crop_flip": True})
    inherited_tf, _ = train_samples(teacher_train_loader(inherited, study_data(
        inherited, teacher_frames=True)))
    assert inherited_tf.crop_pad > 0 and inherited_tf.erasing is None


def test_inherited_augmentation_dumps_as_null_leaves_and_takes_dotted_paths():
    inherited = make_config()
    dumped = inherited.model_dump(mode="json")["teacher"]["train"]["augment"]
    assert dumped and all(v is None for v in dumped.values())  # one null column per leaf
    assert TrialConfig.model_validate(inherited.model_dump(mode="json")) == inherited
    own = make_config({"teacher.train.augment.crop_flip": True})  # as --set and search do
    assert own.teacher.train.augment.crop_flip and own.teacher.train.augment.mixup == 0
    assert TrialConfig.model_validate(own.model_dump(mode="json")) == own
    assert make_config({"teacher.train.augment": {}}).teacher.train.augment is not None
    with pytest.raises(StudyError, match="teacher.train.label_smoothing"):
        make_config({"teacher.train.augment.label_smoothing": 0.1})


def test_cache_key_follows_the_augmentation_the_teacher_trains_with():
    base = teacher_cache_key(make_config())
    assert teacher_cache_key(make_config({"teacher.train.augment": {"crop_flip": True}})) != base
    assert teacher_cache_key(make_config({"data.augment.crop_flip": True})) != base  # inherited
    # naming the study's own augmentation is inheriting it; the student's smoothing is not
    # the teacher's (teacher.train.label_smoothing is)
    assert teacher_cache_key(make_config({"teacher.train.augment": {}})) == base
    assert teacher_cache_key(make_config({"data.augment.label_smoothing": 0.1})) == base
    assert teacher_cache_key(make_config({"teacher.train.label_smoothing": 0.1})) != base
    own = {"teacher.train.augment": {"crop_flip": True}}
    assert teacher_cache_key(make_config({**own, "data.augment.mixup": 0.5})) == \
        teacher_cache_key(make_config(own))  # a teacher with its own ignores the study's


def test_teachers_trained_with_different_augmentations_differ(tmp_path):
    torch.set_num_threads(1)
    configs = [make_config(), make_config({"teacher.train.augment": {"crop_flip": True}}),
               make_config({"teacher.train.augment": {"mixup": 0.8, "cutmix": 1.0}})]
    reports = [ensure_teacher(config, tmp_path) for config in configs]
    assert all(r.trained for r in reports) and len({r.cache_key for r in reports}) == 3
    cache = TeacherCache.of(tmp_path)
    weights = [cache.read_trained(config) for config in configs]
    assert len(set(weights)) == 3  # each trained on what its augmentation made of the data
    assert all(r.test_top1 > 30 for r in reports)  # and learned (10 classes)

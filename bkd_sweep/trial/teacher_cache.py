"""The teacher cache: teachers trained once (``checkpoint: train``) and teacher evaluations,
in one storage ``Location`` (a local or shared folder, or ``s3://bucket/prefix``).

Layout (kept stable: bench/sweep.py and users read it)::

    teachers/<arch>-<key>.pt     the trained weights (a CPU state_dict)
    teachers/<arch>-<key>.json   how they were made (arch, key, recipe, train_seconds);
                                 written after the weights, so both present = cached
    teacher_eval/<key>.json      val/test top-1 of one weights content on the study's data

Each file is one whole write (``Location.write_bytes``: atomic locally, one PUT on an object
store). In a local folder a file lock per key makes concurrent trials wait for the first
one's training; an object store has no lock, so the driver calls ``ensure_teacher`` before
the trials start and the trials then only read.
"""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from bkd_sweep.config import AugmentConfig, TrialConfig
from bkd_sweep.fileio import folder_lock
from bkd_sweep.settings import cache_dir_for, settings
from bkd_sweep.storage import Location

TEACHERS_DIR = "teachers"
EVALUATIONS_DIR = "teacher_eval"

CacheWhere = Location | str | os.PathLike  # what callers may name a cache by


def teacher_augment(config: TrialConfig) -> AugmentConfig:
    """The augmentation the teacher trains with: its own, or else the study's, with the
    teacher recipe's label smoothing (that of its mixup targets)."""
    recipe = config.teacher.train
    return (recipe.augment or config.data.augment).model_copy(
        update={"label_smoothing": recipe.label_smoothing})


def teacher_cache_key(config: TrialConfig) -> str:
    """Hash of what determines a trained teacher: its arch/recipe, the data it sees and the
    augmentation it trains with (resolved, so inheriting it or naming it equal is one key)."""
    teacher = config.teacher.model_dump(mode="json", exclude={"checkpoint", "accuracy"})
    teacher["train"].pop("augment", None)
    data = config.data.model_dump(mode="json",
                                  exclude={"num_workers", "eval_batch_size", "augment"})
    neuron = config.student.neuron.model_dump(mode="json") if config.teacher.timesteps else None
    blob = json.dumps({"teacher": teacher, "data": data, "neuron": neuron,
                       "teacher_augment": teacher_augment(config).model_dump(mode="json")},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def evaluation_key(weights: bytes, config: TrialConfig) -> str:
    """One evaluation per weights content, data and (for an SNN teacher, which is built
    with the student's neurons) neuron settings: a content hash works on every storage (no
    paths or modification times, which object stores do not keep alike)."""
    parts = {"weights": hashlib.sha256(weights).hexdigest(),
             "teacher": config.teacher.model_dump(mode="json"),
             "data": config.data.model_dump(mode="json", exclude={"num_workers"})}
    if config.teacher.timesteps:  # only then: ANN teachers keep their cached evaluations
        parts["neuron"] = config.student.neuron.model_dump(mode="json")
    blob = json.dumps(parts, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class TeacherCache:
    """The cache folder and the names of what it holds for one configuration."""

    root: Location

    @classmethod
    def of(cls, where: "TeacherCache | CacheWhere | None") -> "TeacherCache":
        """A cache from a Location, URI or path; None: that of the results root in force."""
        if isinstance(where, TeacherCache):
            return where
        if where is None:
            where = cache_dir_for(settings().results_dir or Path.cwd() / "results")
        return cls(Location.of(where))

    @property
    def teachers(self) -> Location:
        return self.root.child(TEACHERS_DIR)

    @property
    def evaluations(self) -> Location:
        return self.root.child(EVALUATIONS_DIR)

    @staticmethod
    def weights_name(config: TrialConfig) -> str:
        return f"{config.teacher.arch}-{teacher_cache_key(config)}.pt"

    @staticmethod
    def metadata_name(config: TrialConfig) -> str:
        return f"{config.teacher.arch}-{teacher_cache_key(config)}.json"

    def weights_uri(self, config: TrialConfig) -> str:
        return self.teachers.child(self.weights_name(config)).uri

    def training_lock(self, config: TrialConfig) -> AbstractContextManager:
        """Held while checking for, and training, one configuration's teacher."""
        return folder_lock(self.teachers, f"{teacher_cache_key(config)}.lock")

    def has_trained(self, config: TrialConfig) -> bool:
        return (self.teachers.exists(self.metadata_name(config))
                and self.teachers.exists(self.weights_name(config)))

    def read_trained(self, config: TrialConfig) -> bytes:
        return self.teachers.read_bytes(self.weights_name(config))

    def store_trained(self, config: TrialConfig, weights: bytes, metadata: dict) -> None:
        """Weights first, metadata last: a reader that finds the metadata finds weights."""
        self.teachers.write_bytes(weights, self.weights_name(config))
        self.teachers.write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n",
                                 self.metadata_name(config))

    def evaluation_lock(self, key: str) -> AbstractContextManager:
        return folder_lock(self.evaluations, f"{key}.lock")

    def read_evaluation(self, key: str) -> dict | None:
        name = f"{key}.json"
        if not self.evaluations.exists(name):
            return None
        cached = json.loads(self.evaluations.read_text(name))
        return cached if "test_top1" in cached else None

    def store_evaluation(self, key: str, evaluation: dict) -> None:
        self.evaluations.write_text(json.dumps(evaluation, indent=2, sort_keys=True) + "\n",
                                    f"{key}.json")

"""Registry names in a study (dataset, student, teacher, searched or not) are checked by
`validate`, with the file line and a suggestion."""

from __future__ import annotations

import pytest

from bkd_sweep.preflight import check_references
from bkd_sweep.config import StudyError, load_study_text

CASES = [
    ("name: x\ndata: {dataset: cifar1000}\n", 2, "data.dataset: unknown dataset 'cifar1000' (did you mean 'cifar100'?)"),
    ("name: x\nstudent:\n  arch: sew_resnet81\n", 3, "student.arch: unknown student 'sew_resnet81'"),
    ("name: x\nsearch:\n  params:\n    student.arch: [spiking_cnn_small, spikingformer_4_38]\n", 4,
     "search.params.student.arch: unknown student 'spikingformer_4_38' (did you mean 'spikingformer_4_384'?)"),
    ("name: x\nteacher: {arch: no_such_net_anywhere}\n", 2, "teacher.arch: unknown teacher 'no_such_net_anywhere'"),
    ("name: x\ndistill: {mode: bkd}\n", None, "teacher.checkpoint: required when distill.mode is 'bkd'"),
]


@pytest.mark.parametrize("text,line,needle", CASES)
def test_unknown_names_and_missing_teacher_are_reported_with_their_line(text, line, needle):
    loaded = load_study_text(text, "r.yaml")
    with pytest.raises(StudyError) as info:
        check_references(loaded)
    assert needle in str(info.value)
    if line:
        assert str(info.value).startswith(f"r.yaml:{line}: ")


def test_timm_names_and_registered_teachers_pass():
    for arch in ("vit_small_patch16_224", "resnet18", "cnn_small"):
        check_references(load_study_text(
            f"name: x\nteacher: {{arch: {arch}, checkpoint: train}}\n", "r.yaml"))

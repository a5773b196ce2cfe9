"""bkd_sweep.config.names lists the registries' built-in names for checks that must not
import them (torch, spikingjelly, timm); it must stay equal to the registries."""

from __future__ import annotations

import pytest

from bkd_sweep.config import StudyError, load_study_text, names
from bkd_sweep.preflight import check_references


def test_the_lists_equal_the_registries():
    from bkd_sweep.data import dataset_needs_root, list_datasets
    from bkd_sweep.models import list_students, list_teachers

    hint = "update bkd_sweep/config/names.py with the registries' names"
    assert names.DATASETS == set(list_datasets()), hint
    assert names.STUDENTS == set(list_students()), hint
    assert names.TEACHERS == set(list_teachers()), hint
    assert names.BUNDLED_DATASETS == {n for n in list_datasets() if not dataset_needs_root(n)}


def test_the_timm_teachers_listed_are_timm_models():
    import timm

    assert names.TIMM_TEACHERS <= set(timm.list_models())


def test_names_beyond_the_lists_are_still_looked_up_in_the_registries(monkeypatch):
    from bkd_sweep.models.students import STUDENTS

    # a student registered by one's own code is accepted (the registry is asked), an unknown
    # one is refused with the registry's suggestion (registered here for this test only)
    name = "my_spiking_net_for_test"
    monkeypatch.setitem(STUDENTS._builders, name, lambda **kw: None)
    monkeypatch.setitem(STUDENTS._info, name, {})
    study = "name: n\ndistill: {mode: none}\nstudent: {arch: %s}\n"
    check_references(load_study_text(study % name))
    with pytest.raises(StudyError, match="did you mean 'spiking_cnn_small'"):
        check_references(load_study_text(study % "spiking_cnn_smal"))
    # a timm model as teacher is not in the lists: timm's own list decides
    check_references(load_study_text("name: n\nteacher: {arch: convnext_tiny, "
                                     "checkpoint: /x.pt}\n"))

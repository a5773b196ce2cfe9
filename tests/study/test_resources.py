"""Resource combinations that cannot run are refused by validation with file:line."""

from __future__ import annotations

import pytest

from bkd_sweep.config import StudyError, load_study_text

BASE = "name: r\nresources:\n  per_trial: {gpu: %s, workers: %s}\n"


@pytest.mark.parametrize("gpu,workers,words", [
    ("0.5", "2", "gpu 0.5 with workers 2: data-parallel workers need a whole GPU each"),
    ("2", "1", "gpu 2: one process drives one GPU; for 2 GPUs per trial set workers: 2"),
    ("0.3", "1", "gpu 0.3: a shared GPU must split evenly"),
])
def test_nonsense_resources_are_refused_with_their_line(tmp_path, gpu, workers, words):
    with pytest.raises(StudyError) as caught:
        load_study_text(BASE % (gpu, workers), tmp_path / "r.yaml")
    line = caught.value.one_line()
    assert line.startswith(f"{tmp_path / 'r.yaml'}:3: resources.per_trial: ")
    assert words in line


@pytest.mark.parametrize("gpu,workers", [("0.5", "1"), ("0.25", "1"), ("1", "4"), ("0", "2")])
def test_sensible_resources_load(tmp_path, gpu, workers):
    study = load_study_text(BASE % (gpu, workers), tmp_path / "r.yaml").study
    assert study.resources.per_trial.workers == int(workers)

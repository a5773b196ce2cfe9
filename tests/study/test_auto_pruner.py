"""pruner: auto (the default) resolves per search: Hyperband for random/tpe, none for grid."""

from __future__ import annotations

import optuna
import pytest

from bkd_sweep.config import StudyError, load_study_text
from bkd_sweep.space import make_pruner

STUDY = """name: p
train: {epochs: %d}
search:
  sampler: %s
  params: {distill.blur_ratio: [0.1, 0.2]}
%s"""


def pruner_of(tmp_path, sampler: str, epochs: int = 12, extra: str = ""):
    return load_study_text(STUDY % (epochs, sampler, extra), tmp_path / "p.yaml").study.search.pruner


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_auto_is_hyperband_with_rungs_from_the_epochs(tmp_path, sampler):
    pruner = pruner_of(tmp_path, sampler, epochs=300)
    assert (pruner.name, pruner.min_resource, pruner.max_resource, pruner.reduction_factor) == (
        "hyperband", 11, 300, 3)
    assert isinstance(make_pruner(pruner), optuna.pruners.HyperbandPruner)
    assert pruner_of(tmp_path, sampler, epochs=12).min_resource == 1


def test_grid_and_multi_objective_stay_unpruned(tmp_path):
    assert pruner_of(tmp_path, "grid").name == "none"
    two = "  objectives: [{metric: top1, mode: max}, {metric: energy_mj, mode: min}]\n"
    assert pruner_of(tmp_path, "nsga2", extra=two).name == "none"


def test_an_explicit_pruner_is_kept(tmp_path):
    pruner = pruner_of(tmp_path, "tpe", extra="  pruner: {name: median, startup_trials: 2}\n")
    assert (pruner.name, pruner.startup_trials) == ("median", 2)


def test_unresolved_auto_cannot_build_a_pruner():
    with pytest.raises(StudyError, match="pruner 'auto' is resolved when the study loads"):
        make_pruner({"name": "auto"})

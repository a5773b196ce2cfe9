"""Search space: conditionals, grids with when + seeds, ranges, cycles, sampler/pruner tables."""

from __future__ import annotations

import math

import optuna
import pytest

from bkd_sweep import space
from bkd_sweep.registry import UnknownNameError
from bkd_sweep.config import SearchConfig, StudyError, load_study_text

optuna.logging.set_verbosity(optuna.logging.WARNING)


def search(text: str) -> SearchConfig:
    return load_study_text("name: s\n" + text).study.search


MODES = """
search:
  sampler: grid
  seeds: [0, 1, 2]
  params:
    distill.blur_ratio: {values: [0.15, 0.4, 0.6], when: {distill.mode: [bkd, mixed]}}
    distill.mode: [none, logit, bkd, mixed]
    student.timesteps: [2, 4]
"""


def test_grid_respects_when_and_orders_dependencies_first():
    s = search(MODES)
    assert space.param_order(s) == ["distill.mode", "distill.blur_ratio", "student.timesteps"]
    configs = space.grid(s)
    # none/logit: 1 x 2 timesteps; bkd/mixed: 3 blur x 2 timesteps -> 2*2 + 2*3*2 = 16
    assert len(configs) == 16
    assert all(("distill.blur_ratio" in c) == (c["distill.mode"] in ("bkd", "mixed"))
               for c in configs)
    assert len({tuple(sorted(c.items())) for c in configs}) == 16  # no duplicates
    assert space.count_trials(s) == 16 * 3
    trials = space.grid_trials(s)
    assert trials[:3] == [(configs[0], 0), (configs[0], 1), (configs[0], 2)]


def test_grid_deduplicates_and_n_trials_cuts_it():
    s = search("""
search:
  sampler: grid
  seeds: [0, 1]
  n_trials: 5
  params:
    distill.mode: [bkd, bkd, none]
""")
    assert space.grid(s) == [{"distill.mode": "bkd"}, {"distill.mode": "none"}]
    assert space.count_trials(s) == 4  # 2 configs x 2 seeds, fewer than n_trials


def test_stepped_and_int_ranges_enumerate():
    s = search("""
search:
  sampler: grid
  params:
    distill.alpha: {low: 0.1, high: 0.5, step: 0.2}
    train.epochs: {low: 2, high: 8, step: 3}
""")
    assert space.range_values(s.params["distill.alpha"]) == [0.1, 0.3, 0.5]
    assert space.range_values(s.params["train.epochs"]) == [2, 5, 8]
    assert space.count_trials(s) == 9


def test_suggest_is_define_by_run_with_conditionals():
    s = search(MODES.replace("sampler: grid", "sampler: random").replace(
        "seeds: [0, 1, 2]", "seeds: [0]\n  n_trials: 40"))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    seen_modes = set()
    for _ in range(40):
        trial = study.ask()
        params = space.suggest(trial, s)
        seen_modes.add(params["distill.mode"])
        assert ("distill.blur_ratio" in params) == (params["distill.mode"] in ("bkd", "mixed"))
        assert set(trial.params) == set(params)  # inactive params are never suggested
        study.tell(trial, 1.0)
    assert seen_modes == {"none", "logit", "bkd", "mixed"}


def test_int_log_and_float_ranges_suggest_their_kinds():
    s = search("""
search:
  sampler: tpe
  n_trials: 3
  params:
    train.epochs: {low: 2, high: 64, log: true}
    distill.beta: {low: 1.0e-4, high: 1.0e-2, log: true}
    distill.alpha: {low: 0.5, high: 1.5, step: 0.25}
""")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    dists = None
    for _ in range(20):
        trial = study.ask()
        params = space.suggest(trial, s)
        assert isinstance(params["train.epochs"], int) and 2 <= params["train.epochs"] <= 64
        assert 1e-4 <= params["distill.beta"] <= 1e-2
        assert params["distill.alpha"] in (0.5, 0.75, 1.0, 1.25, 1.5)
        dists = trial.distributions
        study.tell(trial, 0.0)
    assert isinstance(dists["train.epochs"], optuna.distributions.IntDistribution)
    assert dists["train.epochs"].log and dists["distill.beta"].log
    assert dists["distill.alpha"].step == 0.25


def test_count_trials_needs_budget_for_continuous_sampled_space():
    with pytest.raises(StudyError, match="n_trials"):
        space.count_trials(search("""
search:
  sampler: tpe
  params:
    distill.beta: {low: 1.0e-4, high: 1.0e-2, log: true}
"""))
    finite = search("""
search:
  sampler: random
  seeds: [0, 1]
  params:
    distill.mode: [none, bkd]
""")
    assert space.count_trials(finite) == 4


def test_when_cycle_is_a_clear_error():
    s = search("""
search:
  sampler: grid
  params:
    distill.mode: {values: [bkd, mixed], when: {distill.granularity: [pixel]}}
    distill.granularity: {values: [channel, pixel], when: {distill.mode: [bkd]}}
""")
    with pytest.raises(StudyError, match="cycle distill.mode -> distill.granularity -> "
                                          "distill.mode"):
        space.param_order(s)


def test_linked_groups_are_categorical_params_and_gate_others():
    s = search("""
search:
  sampler: grid
  params:
    distill.beta: {values: [0.001, 0.002], when: {linked.backbone: [big]}}
  linked:
    backbone:
      small: {student.timesteps: 2}
      big: {student.timesteps: 8}
""")
    assert space.grid(s) == [{"linked.backbone": "small"},
                             {"linked.backbone": "big", "distill.beta": 0.001},
                             {"linked.backbone": "big", "distill.beta": 0.002}]


def test_non_scalar_categorical_values_round_trip_through_optuna():
    s = search("""
search:
  sampler: random
  n_trials: 2
  params:
    distill.mode: [none, bkd]
""")
    s.params["distill.mode"].values = [[1, 2], {"a": 1}]  # not Optuna-storable as is
    study = optuna.create_study()
    trial = study.ask()
    params = space.suggest(trial, s)
    assert params["distill.mode"] in ([1, 2], {"a": 1})
    assert space.from_optuna_params(trial.params, s) == params
    assert space.from_optuna_params(space.to_optuna_params(params, s), s) == params


def test_sampler_table(monkeypatch):
    s = search("""
search:
  sampler: tpe
  n_trials: 4
  sampler_seed: 7
  params:
    distill.mode: [none, bkd]
    distill.blur_ratio: {values: [0.1, 0.2], when: {distill.mode: [bkd]}}
""")
    tpe_class, made = optuna.samplers.TPESampler, {}

    class RecordingTPESampler(tpe_class):  # records the public constructor arguments
        def __init__(self, **kwargs):
            made.update(kwargs)
            super().__init__(**kwargs)

    monkeypatch.setattr(optuna.samplers, "TPESampler", RecordingTPESampler)
    tpe = space.make_sampler(s)
    assert isinstance(tpe, tpe_class)
    # conditionals -> group=True
    assert made == {"seed": 7, "multivariate": True, "group": True, "constant_liar": True}
    assert isinstance(space.make_sampler(s, "random"), optuna.samplers.RandomSampler)
    assert isinstance(space.make_sampler(s, "nsga2"), optuna.samplers.NSGAIISampler)
    with pytest.raises(UnknownNameError, match="valid: grid, nsga2, random, tpe"):
        space.make_sampler(s, "cmaes")
    assert space.list_samplers() == ["grid", "nsga2", "random", "tpe"]


def prune_decisions(pruner: optuna.pruners.BasePruner, finished: list[float], probe: float,
                    epochs: int) -> list[bool]:
    """The pruner's decision at each epoch for a trial reporting ``probe`` every epoch, after
    one trial per ``finished`` value reported it every epoch and completed (maximize)."""
    study = optuna.create_study(direction="maximize", pruner=pruner)
    for value in finished:
        trial = study.ask()
        for epoch in range(1, epochs + 1):
            trial.report(value, epoch)
            trial.should_prune()  # successive halving records rungs here
        study.tell(trial, value)
    trial = study.ask()
    decisions = []
    for epoch in range(1, epochs + 1):
        trial.report(probe, epoch)
        decisions.append(trial.should_prune())
    return decisions


def test_pruner_table_with_strict_arguments():
    median_args = {"name": "median", "warmup_epochs": 3, "startup_trials": 2,
                   "interval_epochs": 2}
    median = space.make_pruner(median_args)
    assert isinstance(median, optuna.pruners.MedianPruner)
    # startup_trials 2: with one finished trial nothing is pruned
    assert prune_decisions(median, [90.0], 10.0, epochs=6) == [False] * 6
    # warmup_epochs 3: epochs 1..3 never pruned (Optuna n_warmup_steps 4); interval_epochs 2:
    # then every second epoch is judged (4, 6), not 5
    assert prune_decisions(space.make_pruner(median_args), [90.0, 90.0], 10.0, epochs=6) == [
        False, False, False, True, False, True]
    assert isinstance(space.make_pruner({"name": "none"}), optuna.pruners.NopPruner)
    sh_args = {"name": "successive_halving", "reduction_factor": 3, "min_resource": 1}
    assert isinstance(space.make_pruner(sh_args), optuna.pruners.SuccessiveHalvingPruner)
    # reduction_factor 3: of six trials at the first rung the best 6 // 3 = 2 go on, so the
    # second best continues and the third is stopped (factor 2 would keep 3, factor 4 keep 1)
    ranks = [10.0, 20.0, 30.0, 40.0, 50.0]
    assert prune_decisions(space.make_pruner(sh_args), ranks, 45.0, epochs=1) == [False]
    assert prune_decisions(space.make_pruner(sh_args), ranks, 35.0, epochs=1) == [True]
    hb = space.make_pruner({"name": "hyperband", "min_resource": 2, "max_resource": 27})
    assert isinstance(hb, optuna.pruners.HyperbandPruner)
    thr_args = {"name": "threshold", "lower": 20.0}
    assert isinstance(space.make_pruner(thr_args), optuna.pruners.ThresholdPruner)
    # lower 20.0: a value below it is pruned from the first epoch, 20.0 itself is not
    assert prune_decisions(space.make_pruner(thr_args), [], 19.9, epochs=1) == [True]
    assert prune_decisions(space.make_pruner(thr_args), [], 20.0, epochs=1) == [False]
    pct = space.make_pruner({"name": "percentile", "percentile": 40.0})
    assert isinstance(pct, optuna.pruners.PercentilePruner)
    with pytest.raises(UnknownNameError, match="did you mean 'median'"):
        space.make_pruner({"name": "medain"})
    with pytest.raises(StudyError, match="unknown argument 'warmup'.*allowed: warmup_epochs"):
        space.make_pruner({"name": "median", "warmup": 3})
    with pytest.raises(StudyError, match="lower or upper"):
        space.make_pruner({"name": "threshold"})


def test_median_warmup_means_first_epochs_never_pruned():
    pruner = space.make_pruner({"name": "median", "warmup_epochs": 2, "startup_trials": 1})
    study = optuna.create_study(direction="maximize", pruner=pruner)
    good = study.ask()
    for epoch in (1, 2, 3):
        good.report(90.0, epoch)
    study.tell(good, 90.0)
    bad = study.ask()
    decisions = []
    for epoch in (1, 2, 3):
        bad.report(10.0, epoch)
        decisions.append(bad.should_prune())
    assert decisions == [False, False, True]
    assert math.isclose(study.trials[0].value, 90.0)


@pytest.mark.parametrize("ref, allowed, message", [
    ("student.timesteps: {low: 2, high: 8, step: 2}", "[4, 5]",
     "when: student.timesteps never takes 5; its range: 2..8 step 2"),
    ("distill.temperature: {low: 1.0, high: 4.0}", "[2.0]",
     "when: distill.temperature is a float range without step"),
])
def test_when_on_a_range_names_a_value_it_takes(ref, allowed, message):
    text = f"""
search:
  sampler: random
  n_trials: 2
  params:
    {ref}
    distill.blur_ratio: {{values: [0.1, 0.2], when: {{{ref.split(':')[0]}: {allowed}}}}}
"""
    with pytest.raises(StudyError, match=message.replace(".", r"\.")) as caught:
        search(text)
    assert caught.value.field == "search.params.distill.blur_ratio.when"
    ok = search(text.replace(allowed, "[4]") if "step" in ref else text.replace(
        "{low: 1.0, high: 4.0}", "{low: 1.0, high: 4.0, step: 1.0}"))
    assert set(ok.params) == {ref.split(":")[0], "distill.blur_ratio"}

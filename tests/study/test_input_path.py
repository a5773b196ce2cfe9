"""The input path end to end: each bad input found in review gets one line (file, line, field,
what is allowed) and exit code 2 from the command that reads it, with nothing written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.hostile.test_hostile_input import run_cli

TINY = """\
name: tiny
data: {dataset: digits, limit_train: 64, limit_val: 32, limit_test: 32}
distill: {mode: none}
train: {epochs: 1}
"""


def one_line_error(code: int, out: str, err: str) -> str:
    """The message of `error: ...` (exit 2, one line, no traceback)."""
    assert code == 2, (code, out, err)
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err[len("error: "):].rstrip("\n")


def write_study(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("value,allowed", [("-1", "greater than or equal to 0"),
                                           ("soon", "a valid number")])
def test_a_bad_environment_variable_is_one_line_naming_it(tmp_path, monkeypatch, value,
                                                          allowed):
    monkeypatch.setenv("BKD_NODE_WAIT_S", value)
    study = write_study(tmp_path, TINY)
    for command in (["status", str(study)], ["results", str(study)]):
        message = one_line_error(*run_cli(command, tmp_path))
        assert message.startswith("environment variable BKD_NODE_WAIT_S: "), message
        assert allowed in message and repr(value) in message, message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]


PRUNERS_OPTUNA_REFUSES = [  # accepted before, then Optuna raised once the sweep had started
    ("{name: successive_halving, min_resource: 0}", "search.pruner.min_resource",
     "greater than or equal to 1"),
    ("{name: hyperband, max_resource: 0}", "search.pruner.max_resource",
     "greater than or equal to 1"),
    ("{name: hyperband, min_resource: 5, max_resource: 2}", "search.pruner",
     "max_resource (2) must be >= min_resource (5)"),
    ("{name: threshold, lower: 0.9, upper: 0.1}", "search.pruner",
     "lower (0.9) must be <= upper (0.1)"),
    ("{name: threshold}", "search.pruner", "threshold pruner needs lower or upper"),
]


@pytest.mark.parametrize("pruner,field,needle", PRUNERS_OPTUNA_REFUSES,
                         ids=[p[0] for p in PRUNERS_OPTUNA_REFUSES])
def test_pruner_arguments_optuna_refuses_are_refused_when_the_study_loads(
        tmp_path, pruner, field, needle):
    study = write_study(tmp_path, TINY + "search:\n  sampler: random\n  n_trials: 1\n"
                        f"  params: {{student.timesteps: [2]}}\n  pruner: {pruner}\n")
    for command in ("validate", "run"):
        message = one_line_error(*run_cli([command, str(study)], tmp_path))
        assert message.startswith(f"{study}:9: {field}: ") and needle in message, message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]


SEARCHES_THAT_CANNOT_RUN = [  # the space's own errors had no file:line; validate missed the metric
    ("budget", "search:\n  sampler: tpe\n  params:\n    distill.alpha: {low: 0.1, high: 2.0}\n",
     4, "search.n_trials", "needs a budget (n_trials)"),
    ("when cycle", "search:\n  params:\n"
     "    distill.alpha: {values: [1.0, 2.0], when: {distill.beta: [0.1]}}\n"
     "    distill.beta: {values: [0.1, 0.2], when: {distill.alpha: [1.0]}}\n",
     6, "search.params.distill.alpha.when", "dependency cycle distill.alpha -> distill.beta"),
    ("pruned metric", "train: {epochs: 9}\nsearch:\n  sampler: random\n  n_trials: 2\n"
     "  pruned_metric: val_topp1\n  params: {distill.alpha: [1.0, 2.0]}\n",
     8, "search.pruned_metric", "unknown per-epoch metric 'val_topp1'"),
]


@pytest.mark.parametrize("label,search,line,field,needle", SEARCHES_THAT_CANNOT_RUN,
                         ids=[s[0] for s in SEARCHES_THAT_CANNOT_RUN])
def test_a_search_that_cannot_run_is_refused_by_validate_and_plan_with_file_and_line(
        tmp_path, label, search, line, field, needle):
    study = write_study(tmp_path, TINY.replace("train: {epochs: 1}\n", "") + search)
    for command in ("validate", "plan"):
        message = one_line_error(*run_cli([command, str(study)], tmp_path))
        assert message.startswith(f"{study}:{line}: {field}: ") and needle in message, message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]


def test_a_trial_larger_than_this_machine_is_refused_before_ray_writes_anything(
        tmp_path, monkeypatch):
    """Refused before: embedded Ray started and results/mlflow.db was written first."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    cpus = (os.cpu_count() or 1) + 1
    study = write_study(tmp_path, TINY + f"resources: {{per_trial: {{cpu: {cpus}}}}}\n")
    message = one_line_error(*run_cli(["run", str(study)], tmp_path))
    assert message.startswith(f"{study}:5: resources.per_trial: one trial needs {cpus} CPUs"), \
        message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]


@pytest.mark.parametrize("where,line,field", [
    ("train: {epochs: 1, device: cuda}\n", 4, "train.device"),
    ("train: {epochs: 1}\nsearch: {params: {train.device: [cpu, cuda]}}\n", 5,
     "search.params.train.device"),
])
def test_device_cuda_for_trials_given_no_gpu_is_refused_by_validate(tmp_path, where, line,
                                                                    field):
    """Every trial would have failed once started: Ray hides the GPUs from a trial given none."""
    study = write_study(tmp_path, TINY.replace("train: {epochs: 1}\n", where))
    for command in ("validate", "plan"):
        message = one_line_error(*run_cli([command, str(study)], tmp_path))
        assert message.startswith(f"{study}:{line}: {field}: device 'cuda' but "
                                  "resources.per_trial.gpu is 0"), message
    study.write_text(study.read_text() + "resources: {per_trial: {gpu: 1}}\n")
    code, out, err = run_cli(["validate", str(study)], tmp_path)
    assert code == 0, err


@pytest.mark.parametrize("override,field", [
    ("name=Bad Name", "name"), ("train.epochs=abc", "train.epochs"),
    ("search.seeds=[1, 1]", "search.seeds"), ("distill.blur_ratio=2", "distill.blur_ratio")])
def test_a_bad_set_value_is_blamed_on_set_not_on_a_line_of_the_file(tmp_path, override, field):
    """Before: `s.yaml:1: name: ...` named the file's line, which holds a good value."""
    study = write_study(tmp_path, TINY + "search: {seeds: [0]}\n")
    message = one_line_error(*run_cli(["run", str(study), "--set", override], tmp_path))
    path = override.split("=")[0]
    assert message.startswith(f"{study}: {field}: "), message
    assert message.endswith(f" (given by --set {path})"), message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]


@pytest.mark.parametrize("override", ["=1", "train..epochs=2", ".x=1", "train.=3"])
def test_a_set_path_with_an_empty_name_is_refused_as_such(tmp_path, override):
    study = write_study(tmp_path, TINY)
    message = one_line_error(*run_cli(["run", str(study), "--set", override], tmp_path))
    assert message == f"--set {override!r}: expected path=value, the path dotted names " \
                      "(e.g. train.epochs=2)", message


@pytest.mark.parametrize("linked,line,field,needle", [
    ("    a: {x: {seed: 5}}\n", 7, "search.linked.a.x", "seed: search seeds with search.seeds"),
    ("    a: {x: {student.timesteps: 2}, y: {student.timesteps: 4}}\n"
     "    b:\n      p: {train.epochs: 2}\n      q: {student.timesteps: 8}\n", 10,
     "search.linked.b.q", "student.timesteps is set by linked groups 'a' and 'b'"),
])
def test_a_linked_value_that_would_be_silently_lost_is_refused(tmp_path, linked, line, field,
                                                                needle):
    """Before: the trial's seed replaced a bundle's seed, and of two groups setting one path
    the later won, both without a word."""
    study = write_study(tmp_path, TINY + "search:\n  linked:\n" + linked)
    message = one_line_error(*run_cli(["validate", str(study)], tmp_path))
    assert message.startswith(f"{study}:{line}: {field}: ") and needle in message, message


@pytest.mark.parametrize("option,target", [("--out", "folder"), ("--out", "file/x.json"),
                                           ("--checkpoint-dir", "file"),
                                           ("--checkpoint-dir", "file/ckpt")])
def test_train_refuses_an_output_it_cannot_write_before_training(tmp_path, option, target):
    """Before: `train` checked only the current folder when --out's folder did not exist,
    trained (minutes), then died with a traceback writing the result or the checkpoint."""
    study = write_study(tmp_path, TINY)
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    message = one_line_error(*run_cli(["train", str(study), option, str(tmp_path / target)],
                                      tmp_path))
    assert message == f"{option} {tmp_path / target}: cannot be written (checked before " \
                      "training)", message
    assert sorted(p.name for p in tmp_path.rglob("*")) == before

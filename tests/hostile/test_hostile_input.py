"""Hostile input: malformed and adversarial study files get exit code 2 and one line, with no
traceback and nothing written; nothing in a study file or a checkpoint can run code."""

from __future__ import annotations

import io
import os
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bkd_sweep.cli import main

VALID = {
    "name": "hostile",
    "data": {"dataset": "digits", "batch_size": 32},
    "student": {"arch": "spiking_cnn_small", "timesteps": 2},
    "teacher": {"arch": "cnn_small", "checkpoint": "train", "feature": "features"},
    "train": {"epochs": 1, "optimizer": {"name": "adamw", "lr": 1e-3}},
    "distill": {"mode": "mixed", "beta": 1e-5, "blur_ratio": 0.15},
    "search": {"sampler": "grid", "seeds": [0], "params": {"distill.mode": ["none", "bkd"]}},
}

LEAVES = ["name", "data.dataset", "data.batch_size", "student.arch", "student.timesteps",
          "teacher.arch", "teacher.checkpoint", "train.epochs", "train.optimizer.name",
          "train.optimizer.lr", "distill.mode", "distill.beta", "distill.blur_ratio",
          "search.sampler", "search.seeds", "search.params"]

junk = st.one_of(
    st.text(max_size=40),  # includes unicode, control characters, empty strings
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(), st.none(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


def run_cli(args: list[str], cwd: Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    old = Path.cwd()
    os.chdir(cwd)
    try:
        with redirect_stdout(out), redirect_stderr(err):
            code = main(args)
    finally:
        os.chdir(old)
    return code, out.getvalue(), err.getvalue()


def listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def set_path(tree: dict, dotted: str, value) -> dict:
    node = tree
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node[part]
    node[parts[-1]] = value
    return tree


def assert_one_line_error(code: int, out: str, err: str) -> None:
    assert code == 2, (out, err)
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err + out


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hostile")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(LEAVES), value=junk)
def test_junk_values_never_crash_and_say_one_line(workdir, path, value):
    import copy

    study = set_path(copy.deepcopy(VALID), path, value)
    file = workdir / "s.yaml"
    file.write_text(yaml.safe_dump(study, allow_unicode=True))
    before = listing(workdir)
    code, out, err = run_cli(["validate", str(file)], workdir)
    assert code in (0, 2), (code, err)
    if code == 2:
        assert_one_line_error(code, out, err)
    else:
        assert out.count("\n") == 1 and "ok" in out
    assert listing(workdir) == before


key_names = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)),
                    min_size=1, max_size=12)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(section=st.sampled_from(["", "data", "student", "teacher", "train", "distill", "search"]),
       key=key_names)
def test_unknown_keys_anywhere_are_refused_by_run_before_anything_starts(workdir, section, key):
    import copy

    study = copy.deepcopy(VALID)
    target = study if not section else study[section]
    if key in target or key in ("name",):
        return
    target[key] = 1
    file = workdir / "u.yaml"
    file.write_text(yaml.safe_dump(study, allow_unicode=True))
    before = listing(workdir)
    code, out, err = run_cli(["run", str(file)], workdir)
    assert_one_line_error(code, out, err)
    assert "unknown key" in err
    assert listing(workdir) == before  # no results/, no mlflow.db, no journal


ADVERSARIAL = {
    "python object tag": "name: !!python/object/apply:os.system ['touch {marker}']\n",
    "python name tag": "name: x\ndata: !!python/name:os.system\n",
    "python module tag": "name: x\ndata: !!python/module:os\n",
    "path traversal": "name: ../../{marker}\n",
    "absolute name": "name: /etc/passwd\n",
    "recursive anchor": "name: x\ndata: &loop\n  augment: *loop\n",
    "billion laughs": "name: x\na: &a [1,1,1,1,1,1,1,1,1]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
                      "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
                      "e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n",
    "deep nesting": "name: x\ndata: " + "[" * 5000 + "]" * 5000 + "\n",
    "binary tag": "name: !!binary aGVsbG8=\n",
    "huge number": "name: x\ntrain: {epochs: 100000000000000000000000000000}\n",
    "infinite lr": "name: x\ntrain: {optimizer: {lr: .inf}}\n",
    "nan beta": "name: x\ndistill: {beta: .nan}\n",
    "unicode name": "name: \u0430\u0431\u0432\n",
    "not utf-8": None,
}


@pytest.mark.parametrize("label", list(ADVERSARIAL))
def test_adversarial_studies_exit_2_and_run_nothing(workdir, label):
    marker = workdir / f"pwned-{label.replace(' ', '-')}"
    file = workdir / "a.yaml"
    text = ADVERSARIAL[label]
    if text is None:
        file.write_bytes(b"name: \xff\xfe x\n")
    else:
        file.write_text(text.replace("{marker}", str(marker)), encoding="utf-8")
    before = listing(workdir)
    for command in ("validate", "run", "plan"):
        code, out, err = run_cli([command, str(file)], workdir)
        assert_one_line_error(code, out, err)
    assert not marker.exists()
    assert listing(workdir) == before


class _Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoints_load_with_weights_only_and_cannot_run_code(tmp_path):
    from bkd_sweep.models import load_weights
    from bkd_sweep.trial import load_checkpoint

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    torch.save({"model": _Exploit(marker)}, evil)
    net = torch.nn.Linear(2, 2)
    with pytest.raises(Exception):
        load_weights(net, evil)
    with pytest.raises(Exception):
        load_checkpoint(evil)
    assert not marker.exists()

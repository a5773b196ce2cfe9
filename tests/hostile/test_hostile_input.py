"""Hostile input: malformed and adversarial study files get exit code 2 and one line, with no
traceback and nothing written; nothing in a study file or a checkpoint can run code."""

from __future__ import annotations

import io
import os
import pickle
import re
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bkd_sweep.cli import main
from bkd_sweep.models import CheckpointError

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


def study_error_parts(err: str, file: Path) -> tuple[int | None, str]:
    """(line, rest) of the one-line `error: FILE[:LINE]: rest` a bad study prints."""
    match = re.fullmatch(rf"error: {re.escape(str(file))}(?::(\d+))?: (.+)\n", err, re.S)
    assert match, f"not the `file:line: field: message` shape: {err!r}"
    return (int(match.group(1)) if match.group(1) else None), match.group(2)


def assert_study_error(code: int, out: str, err: str, file: Path, *, line: int | None,
                       field: str | None, message: str) -> None:
    """Exit 2 and exactly `error: FILE:LINE: FIELD: ...MESSAGE...` (parts omitted when None)."""
    assert_one_line_error(code, out, err)
    got_line, rest = study_error_parts(err, file)
    assert got_line == line, (line, err)
    if field is not None:
        assert rest.startswith(f"{field}: "), (field, err)
        rest = rest[len(field) + 2:]
    assert message in rest, (message, err)


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
    if code == 2:  # names the file, a line in it, and the junk field (or a key inside it)
        assert_one_line_error(code, out, err)
        line, rest = study_error_parts(err, file)
        assert line is not None and 1 <= line <= len(file.read_text().splitlines()), err
        field = rest.split(": ", 1)[0]
        assert field == path or field.startswith(path + "."), (path, err)
        assert rest[len(field) + 2:].strip(), err  # and says what is wrong
    else:
        assert out.count("\n") == 1 and "ok" in out
    assert listing(workdir) == before


@pytest.mark.parametrize("path", ["teacher.checkpoint", "data.root"])
def test_a_nul_byte_in_a_path_is_one_line_naming_the_field(workdir, path):
    """Found by the junk-values test above (teacher.checkpoint: "\x00" crashed validate with
    pathlib's ValueError before the study was checked)."""
    import copy

    file = workdir / "nul.yaml"
    file.write_text(yaml.safe_dump(set_path(copy.deepcopy(VALID), path, "a\x00b")))
    code, out, err = run_cli(["validate", str(file)], workdir)
    assert_one_line_error(code, out, err)
    line, rest = study_error_parts(err, file)
    assert line is not None and rest == f"{path}: a path cannot contain a NUL byte"


key_names = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)),
                    min_size=1, max_size=12)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(section=st.sampled_from(["", "data", "student", "teacher", "train", "distill", "search"]),
       key=key_names)
def test_unknown_keys_anywhere_are_refused_by_run_before_anything_starts(workdir, section, key):
    import copy

    from bkd_sweep.config import Study

    study = copy.deepcopy(VALID)
    target = study if not section else study[section]
    model = Study.model_fields[section].annotation if section else Study
    if key in target or key in model.model_fields:  # Hypothesis draws names from our code
        return
    target[key] = 1
    file = workdir / "u.yaml"
    file.write_text(yaml.safe_dump(study, allow_unicode=True))
    before = listing(workdir)
    code, out, err = run_cli(["run", str(file)], workdir)
    assert_one_line_error(code, out, err)
    _, rest = study_error_parts(err, file)
    dotted = f"{section}.{key}" if section else key
    assert rest.startswith(" ".join(f"{dotted}: unknown key".split())), (dotted, err)
    assert listing(workdir) == before  # no results/, no mlflow.db, no journal


# label: (study text, line, field, what the message says); the error is
# `error: FILE:LINE: FIELD: MESSAGE`, without LINE or FIELD where they are None
NAME_PATTERN = "String should match pattern '^[a-z0-9][a-z0-9_-]{0,63}$'"
ADVERSARIAL = {
    "python object tag": ("name: !!python/object/apply:os.system ['touch {marker}']\n", 1, None,
                          "YAML tag 'tag:yaml.org,2002:python/object/apply:os.system' is not "
                          "allowed"),
    "python name tag": ("name: x\ndata: !!python/name:os.system\n", 2, None,
                        "YAML tag 'tag:yaml.org,2002:python/name:os.system' is not allowed"),
    "python module tag": ("name: x\ndata: !!python/module:os\n", 2, None,
                          "YAML tag 'tag:yaml.org,2002:python/module:os' is not allowed"),
    "path traversal": ("name: ../../{marker}\n", 1, "name", f"{NAME_PATTERN} (got '../../"),
    "absolute name": ("name: /etc/passwd\n", 1, "name", f"{NAME_PATTERN} (got '/etc/passwd')"),
    "recursive anchor": ("name: x\ndata: &loop\n  augment: *loop\n", 2, None,
                         "recursive YAML anchor"),
    "billion laughs": ("name: x\na: &a [1,1,1,1,1,1,1,1,1]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
                       "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
                       "e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n",
                       2, None, "too many YAML nodes (alias expansion?)"),
    "deep nesting": ("name: x\ndata: " + "[" * 5000 + "]" * 5000 + "\n", None, None,
                     "YAML nested too deeply"),
    "binary tag": ("name: !!binary aGVsbG8=\n", 1, None,
                   "YAML tag 'tag:yaml.org,2002:binary' is not allowed"),
    "huge number": ("name: x\ntrain: {epochs: 100000000000000000000000000000}\n", 2,
                    "train.epochs", "Input should be less than or equal to 100000 "
                    "(got 100000000000000000000000000000)"),
    "infinite lr": ("name: x\ntrain: {optimizer: {lr: .inf}}\n", 2, "train.optimizer.lr",
                    "Input should be a finite number (got inf)"),
    "nan beta": ("name: x\ndistill: {beta: .nan}\n", 2, "distill.beta",
                 "Input should be a finite number (got nan)"),
    "unicode name": ("name: \u0430\u0431\u0432\n", 1, "name",
                     f"{NAME_PATTERN} (got '\u0430\u0431\u0432')"),
    "not utf-8": (None, None, None, "cannot read: UnicodeDecodeError"),
}


SLOW_CASES = ("deep nesting",)  # seconds per command (three commands, 5,000 levels)


@pytest.mark.parametrize("label", [pytest.param(k, marks=pytest.mark.slow) if k in SLOW_CASES
                                   else k for k in ADVERSARIAL])
def test_adversarial_studies_exit_2_and_run_nothing(workdir, label):
    marker = workdir / f"pwned-{label.replace(' ', '-')}"
    file = workdir / "a.yaml"
    text, line, field, message = ADVERSARIAL[label]
    if text is None:
        file.write_bytes(b"name: \xff\xfe x\n")
    else:
        file.write_text(text.replace("{marker}", str(marker)), encoding="utf-8")
    before = listing(workdir)
    for command in ("validate", "run", "plan"):
        code, out, err = run_cli([command, str(file)], workdir)
        assert_study_error(code, out, err, file, line=line, field=field, message=message)
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
    refused = r"Weights only load failed"  # torch's weights_only unpickler said no
    with pytest.raises(CheckpointError,
                       match=rf"evil\.pth: cannot load \(UnpicklingError: {refused}"):
        load_weights(net, evil)
    with pytest.raises(pickle.UnpicklingError, match=rf"(?s){refused}.*GLOBAL \w+\.system"):
        load_checkpoint(evil)
    assert not marker.exists()


# --------------------------------------------------------------------------------------
# Bad places: unreachable storage, a wrong cluster address, options that do not go together


def _tiny_study(root: Path) -> Path:
    file = root / "tiny.yaml"
    study = {**VALID, "distill": {"mode": "none"},
             "search": {"sampler": "grid", "params": {"student.timesteps": [1]}}}
    file.write_text(yaml.safe_dump(study))
    return file


def test_unreachable_object_store_is_one_line_and_nothing_is_written(tmp_path, monkeypatch):
    file = _tiny_study(tmp_path)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-printed-7")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    # an object-store root needs an MLflow server (refused first, tests/engine/test_s3_sweep)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")  # not made
    before = listing(tmp_path)
    code, out, err = run_cli(["run", str(file), "--storage", "s3://no-bucket/x"], tmp_path)
    assert_study_error(code, out, err, file, line=None, field="storage",
                       message="storage s3://no-bucket/x/hostile: not writable")
    assert "not-printed-7" not in err
    assert listing(tmp_path) == before


@pytest.mark.parametrize("uri, says", [
    ("http://user:secret-9@127.0.0.1:9", "cannot reach the MLflow tracking server at "
                                         "http://127.0.0.1:9: Connection refused"),
    ("http://127.0.0.1:port", "http://127.0.0.1: Port could not be cast to integer value"),
    ("sqlite:///{tmp}/tiny.yaml/mlflow.db", "MLflow store {tmp}/tiny.yaml/mlflow.db: its "
                                            "folder cannot be written or created"),
])
def test_an_mlflow_store_out_of_reach_is_one_line_at_once_and_nothing_is_written(
        tmp_path, monkeypatch, uri, says):
    """A server MLflow's client would retry for minutes (4 on this machine), a SQLite file it
    cannot create: each was a traceback after Ray's start."""
    file = _tiny_study(tmp_path)  # a file where the SQLite store's folder would be
    uri, says = uri.format(tmp=tmp_path), says.format(tmp=tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    before = listing(tmp_path)
    code, out, err = run_cli(["run", str(file), "--storage", str(tmp_path / "res")], tmp_path)
    assert_study_error(code, out, err, file, line=None, field="tracking.mlflow_uri",
                       message=says)
    assert "secret-9" not in err and listing(tmp_path) == before


def test_wrong_ray_address_is_one_line_at_once_and_nothing_is_written(tmp_path, monkeypatch):
    file = _tiny_study(tmp_path)
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:9")
    code, out, err = run_cli(["run", str(file), "--storage", str(tmp_path / "res")], tmp_path)
    assert_one_line_error(code, out, err)
    assert "cannot reach the Ray cluster at RAY_ADDRESS=127.0.0.1:9" in err
    assert not (tmp_path / "res").exists()


def test_retry_failed_needs_resume(tmp_path):
    file = _tiny_study(tmp_path)
    for command in ("run", "submit"):
        code, out, err = run_cli([command, str(file), "--retry-failed"], tmp_path)
        assert_one_line_error(code, out, err)
        assert "use it with --resume" in err


def test_status_of_a_study_never_run_is_one_line(tmp_path):
    file = _tiny_study(tmp_path)
    code, out, err = run_cli(["status", str(file), "--storage", str(tmp_path / "none")],
                             tmp_path)
    assert_study_error(code, out, err, file, line=None, field=None,
                       message="no sweep of 'hostile' in")

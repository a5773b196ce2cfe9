"""The README's commands, run exactly as written.

Project rule: two commands do everything on a fresh machine (`make quickstart`, `make test`);
every other command the README shows is run by a test, as written. This file reads the
README's ```bash blocks outside "On a cluster" (whose lines tests/cluster/ runs), joins `\\`
continuations, drops `# comments`, and runs each line verbatim with `bash -c` in a sandbox
laid out like the repository: studies/ (every real study; quickstart.yaml shrunk to 2 short
trials, same name and structure), a .venv link to this venv, results/ and reports/ written
there. A line that is neither run here nor named in COVERED_ELSEWHERE fails the unit test
below, and so does a handled line that disappeared. The README's ```python block is run too.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
VENV_BIN = Path(sys.executable).parent  # this venv's bin/, not resolved: its scripts live here
CLUSTER_SECTION = "## On a cluster"
COMMENT = re.compile(r"(^|\s)#.*$")
MLFLOW_PORT = 5000  # `mlflow ui`'s default, which the README's line relies on
LINE_TIMEOUT_S = 300


# ---------------------------------------------------------------- reading the README


def readme_bash_lines(text: str | None = None) -> list[str]:
    """Command lines of the README's ```bash blocks outside the "On a cluster" section, in
    order: comments stripped, `\\` continuations joined into one line."""
    text = README.read_text(encoding="utf-8") if text is None else text
    start = text.index(CLUSTER_SECTION)
    end = text.find("\n## ", start + 1)
    outside = text[:start] + (text[end:] if end >= 0 else "")
    lines: list[str] = []
    for block in re.findall(r"^```bash\n(.*?)^```", outside, flags=re.M | re.S):
        pending = ""
        for raw in block.splitlines():
            code = COMMENT.sub("", raw).strip()
            if code.endswith("\\"):
                pending += code[:-1].strip() + " "
            elif code:
                lines.append(pending + code)
                pending = ""
        assert not pending, f"README: a bash block ends in a `\\` continuation: {pending!r}"
    return lines


def readme_python_blocks() -> list[str]:
    text = README.read_text(encoding="utf-8")
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.M | re.S)


# ---------------------------------------------------------------- what each line must do


@dataclass(frozen=True)
class Handler:
    prefix: str  # a README line starting with this (then a space) is this handler's
    check: Callable[[str, subprocess.CompletedProcess, Path], None] | None = None
    server: bool = False  # a server line: started and probed by its own test, not run here


def _ok(line: str, done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, (f"README line failed (exit {done.returncode}): {line}\n"
                                  f"stdout: {done.stdout[-3000:]}\nstderr: {done.stderr[-3000:]}")
    return done.stdout


def _study_file(line: str, root: Path) -> Path:
    return root / next(w for w in shlex.split(line) if w.endswith((".yaml", ".yml")))


def _trial_count(study_file: Path) -> tuple[str, int]:
    from bkd_sweep.config import load_study
    from bkd_sweep.space import count_trials

    study = load_study(study_file).study
    return study.name, count_trials(study.search)


def check_validate(line, done, root):
    out = _ok(line, done)
    studies = sorted((root / "studies").glob("*.yaml"))
    assert len(studies) > 1
    for path in studies:
        name = yaml.safe_load(path.read_text())["name"]
        assert f"studies/{path.name}: ok: study {name!r}" in out, (path.name, out)


def check_plan(line, done, root):
    name, n = _trial_count(_study_file(line, root))
    assert f"study {name}: {n} trials" in _ok(line, done)


def check_run(line, done, root):
    _, n = _trial_count(_study_file(line, root))
    assert f"{n}/{n} trials done ({n} completed" in _ok(line, done), done.stdout


def check_results(line, done, root):
    out = _ok(line, done)
    name = shlex.split(line)[2]
    _, n = _trial_count(root / "studies" / f"{name}.yaml")
    assert f"{name}: {n} trials ({n} completed" in out, out
    for mode in SHRUNK_MODES:
        assert re.search(rf"^\s*{mode}\s", out, flags=re.M), (mode, out)


def check_report(line, done, root):
    _ok(line, done)
    study_file = _study_file(line, root)
    spec = yaml.safe_load(study_file.read_text())
    out_dir = root / "reports" / spec["name"]
    assert (out_dir / "index.html").stat().st_size > 0
    tables = [t["name"] for t in spec["report"]["tables"]]
    assert "ablation" in tables
    for table in tables:
        text = (out_dir / f"{table}.md").read_text()
        for mode in SHRUNK_MODES:
            assert mode in text, (table, mode, text)


def check_train(line, done, root):
    _ok(line, done)
    words = shlex.split(line)
    out = root / words[words.index("--out") + 1]
    epochs = int(next(w.split("=", 1)[1] for w in words if w.startswith("train.epochs=")))
    payload = json.loads(out.read_text())
    assert payload["status"] == "completed", payload["reason"]
    for key in ("val_top1", "test_top1", "selected_epoch"):
        assert payload[key] is not None, key
    assert len(payload["result"]["history"]) == epochs
    assert 1 <= payload["selected_epoch"] <= epochs


def check_schema(line, done, root):
    _ok(line, done)
    schema = json.loads((root / line.split(">", 1)[1].strip()).read_text())
    assert "properties" in schema


# Lines run here, by the prefix they start with (the rest of the line is whatever the README
# says). Every README line outside the cluster section matches one of these or COVERED_ELSEWHERE.
RUN_HERE = [
    Handler("bkd-sweep validate", check_validate),
    Handler("bkd-sweep plan", check_plan),
    Handler("bkd-sweep run", check_run),
    Handler("bkd-sweep results", check_results),
    Handler("bkd-sweep report", check_report),
    Handler("bkd-sweep train", check_train),
    Handler("bkd-sweep schema", check_schema),
    Handler(".venv/bin/mlflow ui", server=True),  # test_readme_mlflow_ui_line_serves_the_sweep
]

# Lines not run here, exactly as the README writes them, with what covers them.
COVERED_ELSEWHERE = {
    "make quickstart": "the Makefile's quickstart target: its bkd-sweep commands are README "
                       "lines run here (test_makefile_quickstart_runs_readme_lines)",
    "make test": ".ci/run (CI runs `make test` from a fresh .venv)",
    "make test-fast": "the Makefile's test-fast target: FAST_TIER deselects every registered "
                      "marker (test_makefile_fast_tier_deselects_every_marker)",
    "bkd-sweep submit studies/x.yaml --address http://HOST:8265":
        "a placeholder (no studies/x.yaml, no HOST); the cluster section's submit line with a "
        "real study and address runs in tests/cluster/test_cluster.py::"
        "test_bkd_sweep_submit_line_ships_the_resolved_study",
}


def handler_for(line: str) -> Handler | None:
    matches = [h for h in RUN_HERE if line == h.prefix or line.startswith(h.prefix + " ")]
    assert len(matches) <= 1, (line, matches)
    return matches[0] if matches else None


# ---------------------------------------------------------------- the unit tier


def test_every_readme_command_is_run_here_or_covered_elsewhere():
    lines = readme_bash_lines()
    unhandled = [line for line in lines
                 if handler_for(line) is None and line not in COVERED_ELSEWHERE]
    assert not unhandled, ("README command lines no test runs (run them in "
                           f"tests/test_readme_commands.py or name their test): {unhandled}")
    for handler in RUN_HERE:
        hits = [line for line in lines if handler_for(line) is handler]
        assert len(hits) == 1, f"README should show one `{handler.prefix} ...` line: {hits}"
    gone = [line for line in COVERED_ELSEWHERE if line not in lines]
    assert not gone, f"lines in COVERED_ELSEWHERE the README no longer shows: {gone}"


def test_readme_line_extraction_joins_continuations_and_drops_comments():
    text = ("```bash\na x   # note\n# alone\nb \\\n    c  # tail\n```\n"
            f"{CLUSTER_SECTION}\n```bash\nnot this\n```\n## Next\n```bash\nd '#x'\n```\n")
    assert readme_bash_lines(text) == ["a x", "b c", "d '#x'"]


def test_makefile_quickstart_runs_readme_lines():
    recipe = re.search(r"^quickstart:.*\n((?:\t.*\n)+)", (ROOT / "Makefile").read_text(),
                       flags=re.M).group(1)
    commands = [c.strip().replace("$(VENV)/bin/", "") for c in recipe.splitlines()]
    bkd = [c for c in commands if c.startswith("bkd-sweep ")]
    assert bkd, recipe
    lines = readme_bash_lines()
    assert [c for c in bkd if c not in lines] == [], "make quickstart runs lines the README lacks"


def test_makefile_fast_tier_deselects_every_marker():
    fast = re.search(r"^FAST_TIER := (.*)$", (ROOT / "Makefile").read_text(), flags=re.M).group(1)
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    for marker in (m.split(":", 1)[0] for m in config["markers"]):
        assert f"not {marker}" in fast, marker


# ---------------------------------------------------------------- the sandbox and the runs

SHRUNK_MODES = ("none", "mixed")


def shrink_quickstart(text: str) -> str:
    """The real quickstart study, same name and structure, cut to 2 one-epoch trials."""
    spec = yaml.safe_load(text)
    assert spec["name"] == "quickstart"
    spec["train"]["epochs"] = 1
    spec["teacher"]["train"]["epochs"] = 2
    spec["search"]["seeds"] = [0]
    params = spec["search"]["params"]
    assert set(params) == {"distill.mode", "student.timesteps"}, params
    params["distill.mode"] = list(SHRUNK_MODES)
    params["student.timesteps"] = [2]
    return yaml.safe_dump(spec, sort_keys=False)


def sandbox_env(root: Path) -> dict[str, str]:
    """A user's shell in the sandbox: this venv's bin first, no BKD_*, RAY_ADDRESS or
    MLFLOW_TRACKING_URI, so results go to ./results there."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("BKD_") and k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env.update(PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}", PWD=str(root),
               PYTHONUNBUFFERED="1")
    return env


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("readme")
    (root / "studies").mkdir()
    for study in sorted((ROOT / "studies").glob("*.yaml")):
        text = study.read_text()
        (root / "studies" / study.name).write_text(
            shrink_quickstart(text) if study.name == "quickstart.yaml" else text)
    (root / ".venv").symlink_to(VENV_BIN.parent, target_is_directory=True)
    return root


@pytest.fixture(scope="module")
def ran(sandbox) -> list[tuple[str, Handler, subprocess.CompletedProcess]]:
    """Every README line run here (not the server line), in README order, verbatim."""
    runs = []
    for line in readme_bash_lines():
        handler = handler_for(line)
        if handler is None or handler.server:
            continue
        done = subprocess.run(["bash", "-c", line], cwd=sandbox, env=sandbox_env(sandbox),
                              capture_output=True, text=True, timeout=LINE_TIMEOUT_S)
        runs.append((line, handler, done))
    return runs


@pytest.mark.slow
@pytest.mark.ray  # `bkd-sweep run` starts an embedded Ray
def test_readme_commands_run_as_written(ran, sandbox):
    assert {h.prefix for _, h, _ in ran} == {h.prefix for h in RUN_HERE if not h.server}
    for line, handler, done in ran:
        handler.check(line, done, sandbox)
    # the Results section's Python, as written, on the sweep just run
    for block in readme_python_blocks():
        loads = "res = load(" in block
        probe = "\nprint('rows', len(res.trials), len(res.epochs))" if loads else ""
        done = subprocess.run([sys.executable, "-c", block + probe], cwd=sandbox,
                              env=sandbox_env(sandbox), capture_output=True, text=True, timeout=120)
        out = _ok(block, done)
        if probe:
            _, n_trials, n_epochs = out.split()[-3:]
            assert int(n_trials) == len(SHRUNK_MODES) and int(n_epochs) >= int(n_trials), out
    # the sweep's trials.parquet names its numbers (val selects, test once, the teacher's own)
    from bkd_sweep.results import load

    trials = load(sandbox / "results" / "quickstart").trials
    for col in ("metric.val_top1", "metric.test_top1", "metric.selected_epoch", "config_id"):
        assert trials[col].notna().all(), col
    distilling = trials[trials["param.distill.mode"] != "none"]
    for col in ("metric.teacher_val_top1", "metric.teacher_test_top1"):
        assert len(distilling) and distilling[col].between(0, 100).all(), col


def _port_in_use(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _experiment_names(timeout_s: float, server: subprocess.Popen, log: Path) -> list[str]:
    url = (f"http://127.0.0.1:{MLFLOW_PORT}/api/2.0/mlflow/experiments/search"
           "?max_results=10")
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return [e["name"] for e in json.load(response).get("experiments", [])]
        except OSError:
            if server.poll() is not None:
                pytest.fail(f"mlflow ui exited ({server.returncode}): {log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow ui did not answer in {timeout_s:.0f}s: "
                            f"{log.read_text()[-3000:]}")
            time.sleep(0.5)


@pytest.mark.slow
@pytest.mark.ray  # needs the sweep (`ran`), which starts an embedded Ray
@pytest.mark.server
def test_readme_mlflow_ui_line_serves_the_sweep(ran, sandbox):
    """The MLflow section's line, verbatim, serves the sweep's store: the experiment the
    README tells you to pick, "quickstart", is listed by its REST API."""
    line = next(line for line in readme_bash_lines()
                if (h := handler_for(line)) is not None and h.server)
    assert any(h.prefix == "bkd-sweep run" and d.returncode == 0 for _, h, d in ran), \
        "the README's run line failed; nothing to browse"
    if _port_in_use(MLFLOW_PORT):
        pytest.skip(f"port {MLFLOW_PORT} is taken on this machine, and the README's line "
                    "serves there (mlflow ui's default); the other README lines ran above")
    log = sandbox / "mlflow-ui.log"
    with log.open("w") as sink:
        server = subprocess.Popen(["bash", "-c", line], cwd=sandbox, env=sandbox_env(sandbox),
                                  stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        assert "quickstart" in _experiment_names(60, server, log)
    finally:
        _stop_group(server)


def _stop_group(leader: subprocess.Popen) -> None:
    """Stop the server's process group (mlflow and its uvicorn workers): TERM, then KILL
    whatever is left after 20 s."""
    try:
        os.killpg(leader.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        leader.poll()
        try:
            os.killpg(leader.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    try:
        os.killpg(leader.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    leader.wait(timeout=10)

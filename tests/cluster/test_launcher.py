"""examples/cluster/aws-8x8.yaml, the README's Ray cluster-launcher file, checked without a cloud.

No test can start an AWS cluster, so: (1) the file goes through Ray's own preparation and
validation (``prepare_config``: defaults merged; ``validate_config``: ray-schema.json and the
node-type rules), broken copies are refused, and the code it ships to the nodes builds the
package; (2) the README's `ray up` / `ray dashboard` / `ray down` lines run exactly as written,
with no AWS credentials: Ray's CLI loads, fills out and validates the file, starts the AWS
bootstrap and stops there (no credentials), while a broken copy stops earlier, at validation;
(3) the README's submit line runs as written with its address pointed at a closed port: the
study resolves with the line's variables and the bucket as storage root, and the one error is
the unreachable dashboard. No cluster is started here.
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.cluster.conftest import ROOT, VENV_BIN, readme_line
from tests.cluster.ray_cluster import TOKEN_LINE, free_port

LAUNCHER = "examples/cluster/aws-8x8.yaml"
# `ray` logs this when it starts the AWS bootstrap (the head's IAM role), after validation
BOOTSTRAP = "Creating AWS resource `iam`"


def launcher() -> dict:
    return yaml.safe_load((ROOT / LAUNCHER).read_text(encoding="utf-8"))


def prepared(config: dict) -> dict:
    """What `ray up` does to the file before any cloud call: defaults, then validation."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(copy.deepcopy(config))
    validate_config(config)
    return config


def test_the_launcher_file_passes_rays_validation() -> None:
    import ray

    config = prepared(launcher())
    workers = config["available_node_types"]["gpu-8x"]
    assert (workers["min_workers"], workers["max_workers"], config["max_workers"]) == (8, 8, 8)
    assert workers["resources"]["GPU"] == 8  # what `bkd-sweep plan --cluster 8x8` plans for
    head = config["available_node_types"][config["head_node_type"]]
    assert head["max_workers"] == 0 and head["resources"] == {"CPU": 0}  # no trial on the head
    assert f":{ray.__version__}-" in config["docker"]["image"]  # the Ray pyproject pins
    for commands in (config["head_start_ray_commands"], config["worker_start_ray_commands"]):
        assert any("RAY_AUTH_MODE=token ray start" in c for c in commands), commands
    mounts = config["file_mounts"]
    assert mounts["/home/ray/.ray/auth_token"] == "~/.ray/auth_token"
    shipped = {Path(local).name for local in mounts.values() if not local.startswith("~")}
    assert shipped == {"bkd_sweep", "pyproject.toml", "README.md"}  # enough to pip install
    assert all((ROOT / local).exists() for local in mounts.values() if not local.startswith("~"))
    assert any("pip install" in c and "-e /home/ray/bkd-sweep" in c
               for c in config["worker_setup_commands"])


@pytest.mark.slow  # pip builds a wheel
def test_the_code_it_ships_builds_the_package(tmp_path) -> None:
    """The file_mounts (not the whole checkout) are all `pip install -e` needs on a node."""
    import shutil
    import sys

    mounts = launcher()["file_mounts"]
    project = tmp_path / "bkd-sweep"
    for remote, local in mounts.items():
        if remote.startswith("/home/ray/bkd-sweep/"):
            target = project / remote.removeprefix("/home/ray/bkd-sweep/")
            if (ROOT / local).is_dir():
                shutil.copytree(ROOT / local, target,
                                ignore=shutil.ignore_patterns("__pycache__"))
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(ROOT / local, target)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                            "--no-build-isolation", "--no-index", "-q", "-w",
                            str(tmp_path / "dist"), str(project)],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    [wheel] = (tmp_path / "dist").iterdir()
    assert wheel.name.startswith("bkd_sweep-") and wheel.suffix == ".whl"


@pytest.mark.parametrize("breakage, error", [
    (lambda c: c.update(max_worker=8), "Additional properties are not allowed"),
    (lambda c: c.update(head_node_type="cpu-head"), "must be one of `available_node_types`"),
    (lambda c: c.update(max_workers=4), "smaller than the sum of `min_workers`"),
    (lambda c: c["available_node_types"]["gpu-8x"].update(resources={"GPU": "8"}),
     "is not of type 'integer'"),
], ids=["unknown-key", "unknown-head-type", "too-few-workers", "gpus-as-text"])
def test_a_broken_copy_is_refused(breakage, error) -> None:
    config = launcher()
    breakage(config)
    with pytest.raises(Exception, match=error.replace("`", ".").replace("(", r"\(")):
        prepared(config)


def _offline_env(home: Path) -> dict[str, str]:
    """A shell with no AWS credentials and no way to find any (empty HOME, no instance
    metadata); every endpoint a closed local port, should one be found anyway."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "RAY_", "BKD_", "MLFLOW_"))}
    env.update(HOME=str(home), PATH=VENV_BIN + os.pathsep + os.environ.get("PATH", ""),
               AWS_EC2_METADATA_DISABLED="true",
               AWS_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}",
               RAY_USAGE_STATS_ENABLED="0")
    return env


def _shell(line: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(line, shell=True, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=180)


def _last_error(done: subprocess.CompletedProcess) -> str:
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _plain(done: subprocess.CompletedProcess) -> str:
    """stdout and stderr without the terminal colours `ray` logs with."""
    return re.sub(r"\x1b\[[0-9;]*m", "", done.stdout + done.stderr)


@pytest.mark.slow  # four `ray` processes
def test_readme_launcher_lines_get_to_the_cloud(tmp_path) -> None:
    """Each line gets to the AWS bootstrap, which `ray` starts only once the file is prepared
    and validated, and ends there for want of credentials; a broken copy ends before it."""
    env = _offline_env(tmp_path)
    for prefix in ("ray up ", "ray dashboard ", "ray down "):
        line = readme_line(prefix)
        assert LAUNCHER in line, line
        done = _shell(line, env)
        tail = (line, _plain(done)[-4000:])
        assert done.returncode != 0 and BOOTSTRAP in _plain(done), tail
        assert _last_error(done).endswith("Unable to locate credentials"), tail
    broken = tmp_path / "broken.yaml"  # the same line on a copy Ray must refuse
    text = (ROOT / LAUNCHER).read_text(encoding="utf-8")
    assert "\nmax_workers: 8\n" in text
    broken.write_text(text.replace("\nmax_workers: 8\n", "\nmax_workers: 4\n"))
    done = _shell(readme_line("ray up ").replace(LAUNCHER, str(broken)), env)
    assert done.returncode != 0 and BOOTSTRAP not in _plain(done), _plain(done)[-4000:]
    assert _last_error(done) == ("ValueError: The specified global `max_workers` is smaller "
                                 "than the sum of `min_workers` of all the available node "
                                 "types."), done.stderr[-3000:]


@pytest.mark.slow  # a fresh `bkd-sweep` process
def test_readme_launcher_submit_line_resolves_the_study(tmp_path) -> None:
    env = _offline_env(tmp_path)
    assert _shell(TOKEN_LINE, env).returncode == 0  # the token `ray up` copies to the nodes
    line = readme_line("RAY_AUTH_MODE=token BKD_DATA=/data")
    assert "bkd-sweep submit studies/imagenet_ablation.yaml" in line
    closed = f"http://127.0.0.1:{free_port()}"
    done = _shell(line.replace("http://localhost:8265", closed), env)
    errors = [x for x in done.stderr.splitlines() if x.strip()]
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert errors == [f"error: cannot reach the Ray dashboard at {closed}: "
                      f"Failed to connect to Ray at address: {closed}."], errors

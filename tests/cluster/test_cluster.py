"""The cluster tier: a real two-node Ray cluster on this machine (`ray start` head + node).

(a) the README's `bkd-sweep submit` line ships the resolved study and never prints a secret;
    its `--resume --retry-failed` line then reruns nothing of that finished sweep, and its
    `status` and `report` lines read it back;
(b) a second driver on a running study is refused with one line;
(c) preflight with the data root missing on one node: exit 2, one line naming that node;
    likewise a storage root one node does not share with the driver; and a trial that fits
    no single node (though the cluster's totals hold it) is refused, not left pending; a
    node joining later counts towards max_concurrent: auto only once it passed the check;
(d) the README's own `ray job submit` line (--working-dir included) runs the quickstart across
    both nodes, the extra node is killed mid-sweep, and the sweep completes with 0 lost and 0
    duplicate rows in Parquet and MLflow; `bkd-sweep status` reads it back (last: the node is
    gone afterwards).
Commands run as a user would type them: the README's lines, with HEAD and /shared/bkd filled in
and `--set` options appended to keep the trials short.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cluster.conftest import cluster_env, readme_line
from tests.cluster.ray_cluster import RAY

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
# 8 quickstart trials (4 modes x 2 time-steps, one seed), short: teacher 2 epochs, 300 images
FAST = ["--set", "search.seeds=[0]", "--set", "teacher.train.epochs=2",
        "--set", "data.limit_train=300", "--set", "data.limit_val=100"]


def fill(line: str, cluster, storage: Path) -> str:
    return (line.replace("http://HEAD:8265", cluster.dashboard)
            .replace("HEAD:6379", cluster.address).replace("/shared/bkd", str(storage)))


def run_shell(command: str, env: dict, timeout: float = 420) -> subprocess.CompletedProcess:
    return subprocess.run(command, shell=True, cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def trial_nodes(cluster) -> set[str]:
    """Node ids of the Tune trial actors the cluster ran (Ray's state API keeps dead ones;
    an actor still waiting for its resources has no node yet and ran nowhere)."""
    out = subprocess.run([RAY, "list", "actors", "--detail", "--format", "json", "--limit",
                          "1000", "--address", cluster.dashboard], capture_output=True,
                         text=True, env=cluster_env(cluster), timeout=120, check=True)
    actors = json.loads(out.stdout)
    return {a["node_id"] for a in actors
            if "ImplicitFunc" in (a.get("class_name") or "") and a.get("node_id")}


def read_trials(storage: Path, study: str = "quickstart"):
    from bkd_sweep.tracking import ResultStore

    return ResultStore(storage / study).read()[0]


# the submit test's study: 2 trials (distill.mode none, T 1 and 2)
SUBMIT_FAST = FAST + ["--set", "distill.mode=none",
                      "--set", "search.params={student.timesteps: [1, 2]}"]


@pytest.fixture(scope="module")
def submitted(cluster, tmp_path_factory):
    """The README's `bkd-sweep submit` line run once, its secret-holding environment
    included: (storage root, the finished command). The resume test reuses its sweep."""
    storage = tmp_path_factory.mktemp("submitted") / "shared"
    line = fill(readme_line("RAY_AUTH_MODE=token bkd-sweep submit"), cluster, storage)
    # a credential in the submitter's environment is neither sent (Ray logs a job's
    # runtime_env) nor printed: submit names it as kept back
    done = run_shell(line + " " + shlex.join(SUBMIT_FAST),
                     cluster_env(cluster, AWS_SECRET_ACCESS_KEY="never-printed-42"))
    return storage, done


def test_bkd_sweep_submit_line_ships_the_resolved_study(submitted):
    storage, done = submitted
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "never-printed-42" not in done.stdout + done.stderr
    assert "not sent with the job (credentials; Ray logs a job's environment): " \
        "AWS_SECRET_ACCESS_KEY; the nodes use their own" in done.stderr
    assert "SUCCEEDED" in done.stdout and "2/2 trials done (2 completed" in done.stdout
    trials = read_trials(storage)
    assert sorted(trials["param.student.timesteps"]) == [1, 2]
    assert set(trials["param.distill.mode"]) == {"none"}


def test_readme_resume_line_reruns_nothing_of_a_finished_sweep(cluster, submitted, tmp_path):
    """The README's `--resume --retry-failed` line on the submit test's finished sweep: the
    job succeeds and no trial runs again (same rows, same finish times, no new trial); then
    the README's status and report lines read it back."""
    storage, first = submitted
    assert first.returncode == 0, "the submit test's sweep did not finish"
    before = read_trials(storage).sort_values("trial_id").reset_index(drop=True)
    trial_dirs = sorted(p.name for p in (storage / "quickstart/trials").iterdir())
    line = fill(readme_line("RAY_AUTH_MODE=token bkd-sweep submit", "--retry-failed"),
                cluster, storage)
    again = run_shell(line + " " + shlex.join(SUBMIT_FAST), cluster_env(cluster))
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "SUCCEEDED" in again.stdout
    assert "2/2 trials done (2 completed, 0 pruned, 0 failed)" in again.stdout
    after = read_trials(storage).sort_values("trial_id").reset_index(drop=True)
    assert after["trial_id"].tolist() == before["trial_id"].tolist() == ["t0000", "t0001"]
    assert after["finished_at"].tolist() == before["finished_at"].tolist()  # not re-recorded
    assert sorted(p.name for p in (storage / "quickstart/trials").iterdir()) == trial_dirs

    status = run_shell(fill(readme_line("bkd-sweep status"), cluster, storage),
                       cluster_env(cluster))
    assert status.returncode == 0, status.stderr
    assert ("trials: 2 planned; 2 done (2 completed, 0 pruned, 0 failed), 0 running, "
            "0 to start") in status.stdout
    out = tmp_path / "report"  # --out appended: the README's default is reports/ in the cwd
    report = run_shell(fill(readme_line("bkd-sweep report"), cluster, storage)
                       + f" --out {shlex.quote(str(out))}", cluster_env(cluster))
    assert report.returncode == 0, report.stdout[-2000:] + report.stderr[-2000:]
    assert "2 trials." in (out / "index.html").read_text(encoding="utf-8")


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not predicate():
        if time.time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.5)


def test_a_second_driver_on_a_running_study_is_refused(cluster, tmp_path):
    storage = tmp_path / "shared"
    command = ["bkd-sweep", "run", "studies/quickstart.yaml", "--storage", str(storage), *FAST]
    first = subprocess.Popen(command, cwd=ROOT, env=cluster_env(cluster, connect=True),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for(lambda: (storage / "quickstart/driver.lease").exists(), 180, "the lease")
        second = subprocess.run(command, cwd=ROOT, env=cluster_env(cluster, connect=True),
                                capture_output=True, text=True, timeout=180)
        assert second.returncode == 2, second.stdout + second.stderr
        errors = [line for line in second.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "another driver" in errors[0]
        assert f"pid {first.pid}" in errors[0]
    finally:
        first.terminate()
        first.wait(timeout=120)


def test_preflight_names_the_node_that_lacks_the_data_root_and_the_shared_storage(
        cluster, tmp_path, dataset_files):
    """One node without the data root (hidden in its own mount namespace) and whose copy of
    --storage is its own (a tmpfs over it: writable and readable back there, but the driver's
    probe file is not in it, as with a node-local path): exit 2, one line naming that node,
    the data root and the storage root, and nothing started."""
    data, storage = tmp_path / "datasets", tmp_path / "local"
    dataset_files.write_cifar10(data / "cifar10")
    storage.mkdir()  # the mount point
    study = tmp_path / "cifar.yaml"
    study.write_text(f"""\
name: cifar_tiny
data: {{dataset: cifar10, root: {data / 'cifar10'}, limit_train: 20}}
student: {{arch: spiking_cnn_small}}
distill: {{mode: none}}
search: {{sampler: grid, params: {{student.timesteps: [1]}}}}
resources: {{per_trial: {{cpu: 1}}}}
""")
    before = cluster.alive_nodes()
    blind = cluster.add_node("blind", cpus=1, hide=[data, storage])
    try:
        cluster.wait_for_nodes(before + 1)
        done = subprocess.run(["bkd-sweep", "run", str(study), "--storage", str(storage)],
                              cwd=ROOT, env=cluster_env(cluster, connect=True),
                              capture_output=True, text=True, timeout=300)
    finally:
        blind.stop()
    assert done.returncode == 2, done.stdout + done.stderr
    node_lines = [line for line in done.stderr.splitlines() if line.startswith("node ")]
    assert len(node_lines) == 1, done.stderr
    assert "data root" in node_lines[0] and "does not exist" in node_lines[0]
    assert f"storage {storage} is not shared with the driver" in node_lines[0]
    assert f"preflight failed on 1 of {before + 1} nodes; nothing was started" in done.stderr
    assert not (storage / "cifar_tiny/trials").exists()  # no trial started
    assert not list(storage.glob(".bkd-shared-*"))  # the probe files are removed


TINY = """\
name: tiny
data: {{dataset: digits, limit_train: 64, limit_val: 32}}
student: {{arch: spiking_cnn_small}}
train: {{epochs: 1}}
distill: {{mode: none}}
search: {{sampler: grid, params: {{student.timesteps: [1]}}}}
resources: {{per_trial: {{cpu: {cpu}}}}}
"""


def run_tiny(cluster, tmp_path: Path, storage: Path, cpu: int = 1,
             timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    study = tmp_path / "tiny.yaml"
    study.write_text(TINY.format(cpu=cpu))
    return subprocess.run(["bkd-sweep", "run", str(study), "--storage", str(storage)],
                          cwd=ROOT, env=cluster_env(cluster, connect=True, **env),
                          capture_output=True, text=True, timeout=timeout)


def test_a_trial_no_node_fits_is_refused_not_left_pending(cluster, tmp_path):
    """2 CPUs a trial on 1-CPU nodes: the cluster's totals hold 2 CPUs, no node does, and
    Ray would leave the trial pending forever. After BKD_NODE_WAIT_S (nodes may still be
    starting), exit 2, naming the largest node."""
    done = run_tiny(cluster, tmp_path, tmp_path / "shared", cpu=2, timeout=120,
                    BKD_NODE_WAIT_S="2")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "waiting up to 2 s for a node that fits one trial (BKD_NODE_WAIT_S)" in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    assert "resources.per_trial: no node of the cluster fits one trial: it needs 2 CPUs" \
        in errors[0]
    assert "alive node(s) has 1 CPUs and 0 GPUs" in errors[0]
    assert not (tmp_path / "shared/tiny/trials").exists()


def test_a_node_that_joins_later_counts_once_it_passed(cluster, tmp_path, dataset_files):
    """max_concurrent: auto grows onto nodes that join, each checked first: of two nodes
    joining after preflight, the one without the data root is named once on stderr, never
    counted, and no trial is placed there; the other counts once its check passed."""
    data = tmp_path / "datasets"
    dataset_files.write_cifar10(data / "cifar10")
    study = tmp_path / "cifar.yaml"
    study.write_text(TINY.format(cpu=1).replace(
        "dataset: digits", f"dataset: cifar10, root: {data / 'cifar10'}"))
    driver = subprocess.Popen(
        [sys.executable, "-m", "tests.cluster.gate_driver", str(study), str(tmp_path / "shared")],
        cwd=ROOT, env=cluster_env(cluster, connect=True), stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    late = []
    try:
        first = json.loads(driver.stdout.readline() or "{}")
        assert first and first["capacity"] == first["passed"], driver.communicate()
        late = [cluster.add_node("late-blind", cpus=1, hide=[data]),
                cluster.add_node("late-ready", cpus=1)]
        cluster.wait_for_nodes(first["passed"] + 2)
        out, err = driver.communicate(f"{first['passed'] + 1}\n", timeout=240)
    finally:
        for node in late:
            node.stop()
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 0, out + err
    last, placed = (json.loads(line) for line in out.splitlines()[-2:])
    assert last["capacity"] == first["passed"] + 1  # the ready node only, a CPU a trial
    assert len(last["failed"]) == 1 and "data root" in last["failed"][0], last
    # a trial's placement group per CPU of the cluster: all but the failed node's one placed
    assert placed == {"cpus": first["passed"] + 2, "placed": first["passed"] + 1,
                      "on_failed": 0}, placed
    warnings = [line for line in err.splitlines()
                if line.startswith("warning: a node that joined failed preflight")]
    assert len(warnings) == 1 and "data root" in warnings[0], err


def test_readme_job_submit_line_survives_losing_a_node_mid_sweep(cluster, tmp_path):
    """The README's own `ray job submit` line (--working-dir . included) runs the quickstart
    across both nodes; the extra node is killed mid-sweep; the sweep still completes with
    every trial once in Parquet and in MLflow. (Last: the node is gone afterwards.)"""
    storage = tmp_path / "shared"
    line = fill(readme_line("RAY_AUTH_MODE=token ray job submit"), cluster, storage)
    fast = FAST + ["--set", "search.params={distill.mode: [none, mixed], "
                   "student.timesteps: [2, 4]}", "--set", "train.epochs=2"]
    job = subprocess.Popen(line + " " + shlex.join(fast), shell=True, cwd=ROOT,
                           env=cluster_env(cluster), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    trials_dir = storage / "quickstart/trials"
    # the first two trials run at once, one per node: kill the node once both have finished
    # an epoch and the next ones are under way
    _wait_for(lambda: len(list(trials_dir.glob("*/result.json"))) >= 2, 400,
              "two finished trials")
    nodes_used = trial_nodes(cluster)
    cluster.nodes[1].kill()  # SIGKILL to the node's whole process group
    out, _ = job.communicate(timeout=600)
    assert job.returncode == 0, out[-4000:]
    assert len(nodes_used) == 2  # trials ran on the head and on the other node
    assert "4/4 trials done (4 completed" in out
    assert "warning: MLflow uses a local store (sqlite) on a 2-node cluster" in out
    trials = read_trials(storage)
    assert sorted(trials.trial_id) == [f"t{i:04d}" for i in range(4)]  # 0 lost, 0 duplicated
    assert set(trials.status) == {"completed"}

    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{storage}/mlflow.db")
    experiment = client.get_experiment_by_name("quickstart")
    runs = client.search_runs([experiment.experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert sorted(r.data.tags["trial_id"] for r in children) == sorted(trials.trial_id)

    status = run_shell(fill(readme_line("bkd-sweep status"), cluster, storage),
                       cluster_env(cluster))
    assert status.returncode == 0, status.stderr
    assert "trials: 4 planned; 4 done (4 completed, 0 pruned, 0 failed)" in status.stdout
    assert re.search(r"best so far: val_top1=\d", status.stdout)

"""check_runnable refuses with one line, before anything is written; each preflight check
returns its problems (so a cluster node can report them) and check_runnable raises the first."""

from __future__ import annotations

from pathlib import Path

import pytest

from bkd_sweep.preflight import check_runnable
from bkd_sweep.config import StudyError, load_study


def study(tmp_path: Path, body: str, name: str = "chk") -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(f"name: {name}\ntracking: {{results_dir: {tmp_path / 'results'}}}\n" + body)
    return path


def refused(path: Path, match: str, resume: bool = False) -> StudyError:
    with pytest.raises(StudyError, match=match) as info:
        check_runnable(load_study(path), resume)
    assert "\n" not in str(info.value)
    assert not (path.parent / "results").exists()  # nothing written
    return info.value


def test_unset_variable_names_it_and_where(tmp_path, monkeypatch):
    monkeypatch.delenv("BKD_UNSET_FOR_TEST", raising=False)
    path = study(tmp_path, "data:\n  dataset: cifar10\n  root: ${BKD_UNSET_FOR_TEST}/cifar\n")
    err = refused(path, "BKD_UNSET_FOR_TEST is not set")
    assert err.field == "data.root" and err.line == 5


def test_dataset_root_missing_or_absent(tmp_path):
    refused(study(tmp_path, "data: {dataset: cifar10}\ndistill: {mode: none}\n"),
            "needs data.root")
    refused(study(tmp_path, f"data: {{dataset: mnist, root: {tmp_path / 'nope'}}}\n"
                            "distill: {mode: none}\n"), "does not exist")
    check_runnable(load_study(study(tmp_path, "data: {dataset: digits}\ndistill: {mode: none}\n")))


def test_teacher_checkpoint_missing_in_base_or_linked_bundle(tmp_path):
    refused(study(tmp_path, "teacher: {checkpoint: missing.pth}\n"), "teacher checkpoint not found")
    weights = tmp_path / "t.pth"
    weights.write_bytes(b"x")
    linked = (f"teacher: {{checkpoint: {weights}}}\nsearch:\n  sampler: grid\n  linked:\n"
              f"    backbone:\n      a: {{teacher.arch: resnet18}}\n"
              f"      b: {{teacher.arch: resnet34, teacher.checkpoint: {tmp_path}/gone.pth}}\n")
    refused(study(tmp_path, linked), "gone.pth")
    check_runnable(load_study(study(tmp_path, f"teacher: {{checkpoint: {weights}}}\n")))


def test_unwritable_results_dir(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    path = tmp_path / "s.yaml"
    path.write_text(f"name: chk\ndistill: {{mode: none}}\ntracking: {{results_dir: {blocker}/r}}\n")
    with pytest.raises(StudyError, match="not writable"):
        check_runnable(load_study(path))


def test_existing_sweep_needs_resume(tmp_path):
    from bkd_sweep.engine.book import SweepBook

    path = study(tmp_path, "distill: {mode: none}\n")
    results = tmp_path / "results" / "chk"
    results.mkdir(parents=True)
    (results / "optuna.journal").write_text("")
    check_runnable(load_study(path))  # a journal without trials blocks nothing
    book = SweepBook(load_study(path).study, results)
    book.open()
    book.next_trial()  # one trial started
    with pytest.raises(StudyError, match="already holds a sweep.*use --resume"):
        check_runnable(load_study(path))
    check_runnable(load_study(path), resume=True)


def test_pruned_metric_and_budget(tmp_path):
    refused(study(tmp_path, "distill: {mode: none}\nsearch:\n  sampler: grid\n"
                            "  pruner: {name: median}\n  pruned_metric: acc\n"),
            "unknown per-epoch metric 'acc'")
    refused(study(tmp_path, "distill: {mode: none}\nsearch:\n  sampler: tpe\n  params:\n"
                            "    distill.beta: {low: 0.001, high: 0.01}\n"), "n_trials")


def test_resume_refuses_a_changed_study_but_not_changed_resources(tmp_path):
    from bkd_sweep.engine.book import SweepBook

    path = study(tmp_path, "distill: {mode: none}\nsearch:\n  sampler: grid\n  params:\n"
                           "    student.timesteps: [2, 4]\n")
    loaded = load_study(path)
    SweepBook(loaded.study, tmp_path / "results" / "chk").open()  # a sweep exists
    check_runnable(load_study(path), resume=True)
    path.write_text(path.read_text() + "resources: {max_concurrent: 1}\n")
    check_runnable(load_study(path), resume=True)  # how it runs may change
    path.write_text(path.read_text().replace("[2, 4]", "[2, 8]"))
    with pytest.raises(StudyError, match="different version of this study"):
        check_runnable(load_study(path), resume=True)


def test_each_check_returns_every_problem_and_check_runnable_raises_the_first(tmp_path):
    from bkd_sweep.preflight import NODE_CHECKS, path_problems

    path = study(tmp_path, f"data: {{dataset: mnist, root: {tmp_path / 'nope'}}}\n"
                           "teacher: {checkpoint: missing.pth}\n")
    loaded = load_study(path)
    problems = path_problems(loaded)
    assert [p.field for p in problems] == ["data.root", "teacher.checkpoint"]
    assert "does not exist" in str(problems[0]) and "not found" in str(problems[1])
    node_problems = [str(p) for check in NODE_CHECKS for p in check(loaded)]
    assert node_problems == [str(p) for p in problems]  # variables set, results writable
    refused(path, "data root .* does not exist")


def test_datasets_declare_whether_they_need_a_root():
    from bkd_sweep.data import dataset_needs_root, list_datasets

    assert not dataset_needs_root("digits") and not dataset_needs_root("synthetic")
    assert all(dataset_needs_root(name) for name in list_datasets()
               if name not in ("digits", "synthetic"))
    assert dataset_needs_root("not_registered")  # unknown: assume it reads a root


def test_the_driver_checks_a_study_without_importing_torch(tmp_path):
    """The driver never needs torch (2 s to import) nor spikingjelly or timm: `run`'s checks
    (names, paths, the results folder) read the built-in names and the bundled datasets from
    bkd_sweep.config.names, not from the registries."""
    import subprocess
    import sys

    for body in ("data: {dataset: digits}\ndistill: {mode: none}\n",
                 f"data: {{dataset: cifar10, root: {tmp_path}}}\ndistill: {{mode: none}}\n"
                 "student: {arch: sew_resnet18_cifar}\n"
                 "teacher: {arch: resnet18_cifar, checkpoint: train}\n"
                 "search: {params: {distill.mode: [none, mixed]}}\n"):
        path = study(tmp_path, body)
        code = ("import sys; from bkd_sweep.config import load_study; "
                "from bkd_sweep.preflight import check_references, check_runnable; "
                "import bkd_sweep.engine.runner; loaded = load_study(sys.argv[1]); "
                "check_references(loaded); check_runnable(loaded); print(sorted(m for m in "
                "('torch', 'timm', 'torchvision', 'spikingjelly') if m in sys.modules))")
        out = subprocess.run([sys.executable, "-c", code, str(path)], check=True,
                             capture_output=True, text=True).stdout
        assert out.strip() == "[]", body

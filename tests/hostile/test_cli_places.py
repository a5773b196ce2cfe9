"""Bad places and names the first check missed: each is one line, exit 2, nothing written, and
no credential in the message."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.hostile.test_hostile_input import (VALID, assert_one_line_error, assert_study_error,
                                              listing, run_cli)


def _study(root: Path, **changes) -> Path:
    file = root / "study.yaml"
    study = {**VALID, "tracking": {"results_dir": str(root / "results")}, **changes}
    file.write_text(yaml.safe_dump(study, sort_keys=False), encoding="utf-8")
    return file


def test_results_of_a_study_never_run_is_one_line(tmp_path):
    file = _study(tmp_path)
    before = listing(tmp_path)
    for args in (["results", str(file)], ["results", str(file), "--rebuild"]):
        code, out, err = run_cli(args, tmp_path)
        assert_one_line_error(code, out, err)
        assert "no results of 'hostile' in" in err, err
    assert listing(tmp_path) == before


def test_a_storage_uri_that_cannot_be_opened_is_one_line_without_its_password(tmp_path):
    file = _study(tmp_path, storage="hdfs://alice:s3cr3tPW@127.0.0.1:1/x")
    before = listing(tmp_path)
    for command in ("status", "results", "report"):
        code, out, err = run_cli([command, str(file)], tmp_path)
        assert_one_line_error(code, out, err)
        assert "s3cr3tPW" not in err and "hdfs://alice:***@127.0.0.1:1/x" in err, err
    assert listing(tmp_path) == before


def test_secrets_in_a_uri_query_are_hidden(tmp_path):
    uri = ("s3://bucket/x?access_key=AKIAEXAMPLE&secret_key=TOPSECRET&region=us-east-1"
           "&scheme=bogus")
    code, out, err = run_cli(["results", uri], tmp_path)
    assert_one_line_error(code, out, err)
    assert "TOPSECRET" not in err and "AKIAEXAMPLE" not in err, err
    assert "secret_key=***" in err and "region=us-east-1" in err, err


def test_an_unknown_name_in_a_linked_bundle_is_refused_by_validate(tmp_path):
    file = _study(tmp_path, search={
        "sampler": "grid", "seeds": [0],
        "linked": {"net": {"small": {"student.arch": "spiking_cnn_small"},
                           "bad": {"student.arch": "nosuchnet"}}}})
    line = 1 + file.read_text().splitlines().index("        student.arch: nosuchnet")
    code, out, err = run_cli(["validate", str(file)], tmp_path)
    assert_study_error(code, out, err, file, line=line,
                       field="search.linked.net.bad.student.arch",
                       message="unknown student 'nosuchnet'")


def test_a_sampler_seed_optuna_cannot_take_is_refused(tmp_path):
    for seed in (-1, 2**32):
        file = _study(tmp_path, search={"sampler": "random", "n_trials": 2, "sampler_seed": seed,
                                        "params": {"distill.blur_ratio": {"low": 0.1,
                                                                          "high": 0.3}}})
        code, out, err = run_cli(["validate", str(file)], tmp_path)
        assert_one_line_error(code, out, err)
        assert "search.sampler_seed" in err, err


def test_a_union_field_names_the_field_and_every_allowed_form(tmp_path):
    """pydantic's union member tags (.int, .constrained-int) stay out of the field name, and
    the message says what each member accepts."""
    cases = [
        ({"resources": {"max_concurrent": 0}}, "resources.max_concurrent",
         "Input should be greater than or equal to 1 or 'auto' (got 0)"),
        ({"search": {"sampler": "random", "n_trials": 2,
                     "params": {"distill.blur_ratio": {"low": "abc", "high": 0.3}}}},
         "search.params.distill.blur_ratio.low",
         "Input should be a valid integer or a valid number (got 'abc')"),
    ]
    for changes, field, message in cases:
        file = _study(tmp_path, **changes)
        code, out, err = run_cli(["validate", str(file)], tmp_path)
        assert_one_line_error(code, out, err)
        assert f": {field}: {message}\n" in err, err


def test_a_bare_date_is_named_with_its_field(tmp_path):
    file = tmp_path / "dated.yaml"
    file.write_text("name: dated\ndescription: 2024-01-01\n", encoding="utf-8")
    code, out, err = run_cli(["validate", str(file)], tmp_path)
    assert_study_error(code, out, err, file, line=2, field="description",
                       message="2024-01-01 reads as a date in YAML; quote it for text")


def test_a_report_section_naming_unknown_things_is_refused(tmp_path):
    for report, field, message in (
            ({"tables": [{"name": "t", "rows": "distill.mdoe"}]}, "report.tables.0.rows",
             "unknown parameter path 'distill.mdoe' (did you mean 'distill.mode'?)"),
            ({"tables": [{"name": "t", "rows": "distill.mode", "metric": "top_1"}]},
             "report.tables.0.metric", "unknown metric 'top_1' (did you mean 'top1'?)"),
            ({"pareto": {"x": "energy", "y": "top1"}}, "report.pareto.x",
             "unknown metric 'energy'")):
        file = _study(tmp_path, report=report)
        code, out, err = run_cli(["validate", str(file)], tmp_path)
        assert_one_line_error(code, out, err)
        assert f": {field}: {message}" in err, err


def test_report_of_results_whose_study_names_an_unknown_metric_writes_nothing(tmp_path):
    """study.json written by an older version may hold what validate now refuses."""
    from tests.report.report_fixtures import fixture_results_dir

    results = fixture_results_dir(tmp_path / "results" / "fixture", tables=[
        {"name": "t", "rows": "distill.mode", "metric": "nosuchmetric"}])
    out_dir = tmp_path / "report"
    code, out, err = run_cli(["report", str(results), "--out", str(out_dir), "--no-mlflow"],
                             tmp_path)
    assert_one_line_error(code, out, err)
    assert "report table 't': unknown metric 'nosuchmetric'; available:" in err, err
    assert not out_dir.exists()


def test_a_linked_bundle_that_distils_without_a_teacher_checkpoint_is_refused(tmp_path):
    teacherless = {k: v for k, v in VALID["teacher"].items() if k != "checkpoint"}
    file = _study(tmp_path, teacher=teacherless, distill={"mode": "none"}, search={
        "sampler": "grid", "seeds": [0],
        "linked": {"recipe": {"plain": {"distill.mode": "none"},
                              "bkd": {"distill.mode": "bkd", "distill.beta": 1e-5}}}})
    before = listing(tmp_path)
    code, out, err = run_cli(["run", str(file)], tmp_path)
    assert_one_line_error(code, out, err)
    assert ": search.linked.recipe.bkd: required when distill.mode is 'bkd'" in err, err
    assert listing(tmp_path) == before

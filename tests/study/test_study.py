"""The study schema: valid studies load, and each malformed one gives one clear line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bkd_sweep.config import (CategoricalParam, RangeParam, StudyError, TrialConfig,
                             apply_overrides, load_study, load_study_text, parse_override,
                             study_json_schema)

ROOT = Path(__file__).resolve().parents[2]

GOOD = """\
name: tiny
data: {dataset: digits, root: ${BKD_TEST_DATA:-data}/digits, batch_size: 32}
teacher: {arch: cnn_small, checkpoint: train}
distill: {mode: mixed, blur_ratio: 0.15}
search:
  sampler: grid
  seeds: [0, 1]
  params:
    distill.mode: [none, logit, bkd, mixed]
    distill.blur_ratio: {values: [0.15, 0.4], when: {distill.mode: [bkd, mixed]}}
    train.epochs: {low: 1, high: 3, step: 1}
  pruner: {name: median, warmup_epochs: 1}
"""


def test_good_study_loads_with_lines_interpolation_and_relative_paths(tmp_path, monkeypatch):
    monkeypatch.delenv("BKD_TEST_DATA", raising=False)
    path = tmp_path / "sub" / "s.yaml"
    path.parent.mkdir()
    path.write_text(GOOD)
    loaded = load_study(path)
    study = loaded.study
    assert study.name == "tiny"
    # ${VAR:-default} falls back, and relative paths resolve against the study's folder
    assert study.data.root == str((path.parent / "data" / "digits").resolve())
    assert loaded.lines["distill.mode"] == 4
    assert loaded.line_of("search.params.distill.blur_ratio.when") == 10
    spec = study.search.params["distill.blur_ratio"]
    assert isinstance(spec, CategoricalParam) and spec.when == {"distill.mode": ["bkd", "mixed"]}
    epochs = study.search.params["train.epochs"]
    assert isinstance(epochs, RangeParam) and epochs.is_int
    assert loaded.results_dir().name == "tiny"


def test_environment_variables_interpolate_and_unset_ones_are_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("BKD_TEST_DATA", "/datasets")
    loaded = load_study_text("name: x\ndata: {dataset: cifar10, root: ${BKD_TEST_DATA}/c10}\n"
                             "teacher: {checkpoint: ${BKD_TEST_UNSET}/t.pth}\n", tmp_path / "x.yaml")
    assert loaded.study.data.root == "/datasets/c10"
    assert loaded.unresolved == ["BKD_TEST_UNSET"]
    assert loaded.study.teacher.checkpoint == "${BKD_TEST_UNSET}/t.pth"


def test_searched_and_linked_paths_resolve_and_uris_stay_as_written(tmp_path):
    """A Ray worker runs in a folder of its own: every path a trial may be given is absolute
    once loaded, wherever the study gives it; URIs are not paths (a password in one must not
    be folded into a local path, where no redaction recognises it)."""
    text = """\
name: paths
data: {dataset: cifar10, root: "s3://AK:SECRET@minio:9000/data"}
teacher: {arch: resnet18_cifar, checkpoint: ckpt/a.pt}
search:
  sampler: grid
  params:
    teacher.checkpoint: [ckpt/a.pt, /abs/b.pt, train]
    distill.blur_ratio: {values: [0.15, 0.4], when: {teacher.checkpoint: [ckpt/a.pt]}}
  linked:
    backbone:
      small: {student.arch: spiking_cnn_small, data.root: data/small}
      big: {student.arch: sew_resnet18_cifar, data.root: "s3://bucket/big"}
"""
    study = load_study_text(text, tmp_path / "p.yaml").study
    assert study.data.root == "s3://AK:SECRET@minio:9000/data"
    assert study.teacher.checkpoint == str(tmp_path / "ckpt/a.pt")
    assert study.search.params["teacher.checkpoint"].values == [
        str(tmp_path / "ckpt/a.pt"), "/abs/b.pt", "train"]
    # a condition on a path names the same (absolute) value the path takes
    assert study.search.params["distill.blur_ratio"].when == {
        "teacher.checkpoint": [str(tmp_path / "ckpt/a.pt")]}
    long_form = "name: q\nsearch: {sampler: grid, params: {data.root: {values: [d1, d2]}}}\n"
    assert load_study_text(long_form, tmp_path / "q.yaml").study.search.params[
        "data.root"].values == [str(tmp_path / "d1"), str(tmp_path / "d2")]
    bundles = study.search.linked["backbone"]
    assert bundles["small"]["data.root"] == str(tmp_path / "data/small")
    assert bundles["big"]["data.root"] == "s3://bucket/big"


MALFORMED = [
    ("unknown key", "name: x\ndistill: {mdoe: bkd}\n", 2, "distill.mdoe: unknown key (did you mean 'mode'?)"),
    ("wrong type", "name: x\ntrain:\n  epochs: many\n", 3, "train.epochs: Input should be a valid integer"),
    ("bad choice", "name: x\ndistill:\n  mode: blurry\n", 3, "distill.mode: Input should be 'none', 'logit', 'bkd' or 'mixed'"),
    ("when on unknown parameter", "name: x\nsearch:\n  params:\n    distill.blur_ratio: {values: [0.1], when: {distill.mood: [bkd]}}\n",
     4, "unknown parameter 'distill.mood'"),
    ("blur ratio outside [0,1)", "name: x\ndistill:\n  blur_ratio: 1.0\n", 3, "distill.blur_ratio: Input should be less than 1"),
    ("blur ratio in a search list", "name: x\nsearch:\n  params:\n    distill.blur_ratio: [0.1, 1.5]\n", 4, "value 1.5"),
    ("negative epochs", "name: x\ntrain: {epochs: -3}\n", 2, "train.epochs: Input should be greater than or equal to 1"),
    ("bad yaml", "name: x\ndata: [unclosed\n", 3, "invalid YAML"),
    ("unknown parameter path", "name: x\nsearch:\n  params:\n    distill.blur: [0.1]\n", 4, "did you mean 'distill.blur_ratio'"),
    ("python tag", "name: !!python/object/apply:os.system [ls]\n", 1, "is not allowed"),
    ("recursive anchor", "name: x\ndata: &a\n  augment: *a\n", 2, "recursive YAML anchor"),
    ("path traversal in name", "name: ../etc\n", 1, "name: String should match pattern"),
    ("pruner typo", "name: x\nsearch:\n  pruner: {name: median, warmup: 3}\n", 3, "did you mean 'warmup_epochs'"),
    ("multi-objective median", "name: x\nsearch:\n  objectives: [{metric: top1}, {metric: energy_mj, mode: min}]\n  pruner: {name: median}\n",
     2, "multi-objective studies allow only 'threshold'"),
    ("empty", "", None, "empty study file"),
    ("not a mapping", "- a\n- b\n", 1, "a study must be a mapping"),
    ("duplicate key", "name: x\nname: y\n", 2, "duplicate key 'name'"),
    ("range reversed", "name: x\nsearch:\n  params:\n    train.epochs: {low: 5, high: 1}\n", 4, "high (1) must be >= low (5)"),
]


@pytest.mark.parametrize("label,text,line,needle", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_studies_give_one_line_with_file_line_and_field(label, text, line, needle):
    with pytest.raises(StudyError) as info:
        load_study_text(text, "bad.yaml")
    message = str(info.value)
    assert "\n" not in message
    assert needle in message, message
    prefix = f"bad.yaml:{line}: " if line else "bad.yaml: "
    assert message.startswith(prefix), message


def test_overrides_apply_and_validate():
    config = apply_overrides(TrialConfig(), {"distill.mode": "bkd", "student.timesteps": 2})
    assert config.distill.mode == "bkd" and config.student.timesteps == 2
    with pytest.raises(StudyError, match="distill.blur_ratio"):
        apply_overrides(TrialConfig(), {"distill.blur_ratio": 2})
    with pytest.raises(StudyError, match="did you mean 'student.timesteps'"):
        apply_overrides(TrialConfig(), {"student.timestep": 2})
    assert parse_override("train.epochs=3") == ("train.epochs", 3)
    assert parse_override("distill.mode=mixed") == ("distill.mode", "mixed")


def test_config_hash_tracks_science_and_flat_paths_match_parquet_names():
    a, b = TrialConfig(), TrialConfig(seed=1)
    assert a.config_hash() == TrialConfig().config_hash() != b.config_hash()
    flat = a.flat()
    assert flat["distill.blur_ratio"] == 0.15 and flat["student.neuron.tau"] == 2.0


def test_linked_choices_expand_into_their_bundle():
    loaded = load_study(ROOT / "studies" / "imagenet_ablation.yaml")
    study = loaded.study
    config = study.trial_config({"distill.mode": "bkd", "linked.backbone": "sew_resnet50"}, seed=3)
    assert (config.student.arch, config.teacher.arch, config.seed) == ("sew_resnet50", "resnet50", 3)
    assert config.train.optimizer.name == "sgd"
    config = study.trial_config({"distill.mode": "mixed", "linked.backbone": "spikingformer_8_768"}, 0)
    assert config.teacher.arch == "vit_base_patch16_224" and config.data.batch_size == 24
    assert study.linked_params()["linked.backbone"][0] == "sew_resnet18"


def test_bundled_studies_all_load():
    for path in sorted((ROOT / "studies").glob("*.yaml")):
        assert load_study(path).study.name == path.stem


def test_json_schema_describes_the_sections():
    schema = study_json_schema()
    assert {"name", "data", "student", "search"} <= set(schema["properties"])
    json.dumps(schema)


def test_storage_root_precedence_flag_env_study_then_older_names(tmp_path, monkeypatch):
    for name in ("BKD_STORAGE", "BKD_RESULTS_DIR"):
        monkeypatch.delenv(name, raising=False)
    study = tmp_path / "s.yaml"
    study.write_text(GOOD.replace("name: tiny", "name: tiny\nstorage: shared/bkd"))
    loaded = load_study(study)
    assert loaded.storage_uri() == str(tmp_path / "shared/bkd")  # relative to the study file
    assert loaded.results_dir() == tmp_path / "shared/bkd/tiny"
    monkeypatch.setenv("BKD_RESULTS_DIR", str(tmp_path / "older"))
    assert loaded.storage_uri() == str(tmp_path / "shared/bkd")  # storage: beats the old name
    monkeypatch.setenv("BKD_STORAGE", "s3://bucket/prefix/")
    assert loaded.storage_uri() == "s3://bucket/prefix"
    assert loaded.results_location().uri == "s3://bucket/prefix/tiny"
    with pytest.raises(StudyError, match="needs a filesystem path"):
        loaded.results_dir()
    assert loaded.with_storage(str(tmp_path / "flag")).results_dir() == tmp_path / "flag/tiny"


def test_set_overrides_replace_file_values_before_validation(tmp_path):
    study = tmp_path / "s.yaml"
    study.write_text(GOOD)
    loaded = load_study(study, {"distill.alpha": 0.5, "search.seeds": [3, 4]})
    assert loaded.study.distill.alpha == 0.5 and loaded.study.search.seeds == [3, 4]
    with pytest.raises(StudyError, match="alpha"):
        load_study(study, {"distill.alpha": -1})


def test_set_names_a_searched_parameter_by_its_dotted_path(tmp_path):
    """Under search.params a key is a parameter path: --set search.params.distill.mode=...
    replaces that parameter's values (or adds a new parameter), and a key after it (values)
    goes into the parameter; other sections still split at every dot."""
    study = tmp_path / "s.yaml"
    study.write_text("name: s\ndistill: {mode: none}\nsearch:\n  sampler: grid\n"
                     "  params:\n    distill.mode: [none, bkd]\n")
    replaced = load_study(study, {"search.params.distill.mode": ["none", "logit"]})
    assert replaced.study.search.params["distill.mode"].values == ["none", "logit"]
    added = load_study(study, {"search.params.student.timesteps": [1, 2],
                               "train.epochs": 3})
    assert added.study.search.params["student.timesteps"].values == [1, 2]
    assert added.study.search.params["distill.mode"].values == ["none", "bkd"]
    assert added.raw["train"]["epochs"] == 3
    study.write_text(study.read_text().replace("[none, bkd]", "{values: [none, bkd]}"))
    inner = load_study(study, {"search.params.distill.mode.values": ["mixed"]})
    assert inner.study.search.params["distill.mode"].values == ["mixed"]

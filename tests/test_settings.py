"""settings(): every environment variable bkd-sweep reads, and the README table that lists them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from bkd_sweep.settings import Settings, cache_dir_for, env_var, settings

README = Path(__file__).resolve().parents[1] / "README.md"
TABLE_HEADING = "## Environment variables"
ENV_NAMES = {env_var(field): field for field in Settings.model_fields}


def readme_table() -> dict[str, list[str]]:
    """Rows of the first table under the README's "Environment variables" heading, by name."""
    text = README.read_text(encoding="utf-8")
    assert TABLE_HEADING in text, f"README has no {TABLE_HEADING!r} section"
    section = text.split(TABLE_HEADING, 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    assert len(rows) > 2, "the section has no table"
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    assert header == ["Variable", "Default", "What it does"], header
    assert set(rows[1].replace("|", "").strip()) <= set("-: ")  # the separator row
    table = {}
    for row in rows[2:]:
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        match = re.fullmatch(r"`([A-Z_]+)`", cells[0])
        assert match, f"first cell must be a `NAME`: {row}"
        assert len(cells) == 3 and all(cells), f"every row needs a default and a description: {row}"
        table[match.group(1)] = cells
    return table


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No bkd-sweep variable set, whatever the caller's shell has."""
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_readme_table_lists_exactly_the_settings_fields() -> None:
    assert set(readme_table()) == set(ENV_NAMES)


def test_env_var_names_each_field_by_its_variable() -> None:
    assert ENV_NAMES == {"BKD_STORAGE": "storage", "BKD_RESULTS_DIR": "results_dir", "BKD_CACHE_DIR": "cache_dir",
                         "BKD_DATA": "data", "BKD_CKPT": "ckpt",
                         "MLFLOW_TRACKING_URI": "mlflow_tracking_uri", "RAY_ADDRESS": "ray_address",
                         "BKD_NODE_WAIT_S": "node_wait_s"}


def test_unset_environment_gives_no_values(clean_env) -> None:
    assert settings().model_dump() == {field: None for field in Settings.model_fields}


@pytest.mark.parametrize("name", sorted(ENV_NAMES))
def test_each_variable_sets_its_field(clean_env, name: str) -> None:
    value = "30.0" if name == "BKD_NODE_WAIT_S" else "/some/where"  # a number, the rest paths
    clean_env.setenv(name, value)
    current = settings().model_dump()
    field = ENV_NAMES[name]
    assert str(current.pop(field)) == value
    assert set(current.values()) == {None}  # and nothing else


def test_paths_are_paths_and_uris_stay_strings(clean_env) -> None:
    clean_env.setenv("BKD_DATA", "~/data")
    clean_env.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    current = settings()
    assert current.data == Path("~/data")
    assert current.mlflow_tracking_uri == "http://127.0.0.1:5000"


def test_standard_variables_are_not_read_with_the_bkd_prefix(clean_env) -> None:
    clean_env.setenv("BKD_MLFLOW_TRACKING_URI", "http://wrong:1")
    clean_env.setenv("BKD_RAY_ADDRESS", "wrong:1")
    assert settings().mlflow_tracking_uri is None and settings().ray_address is None


def test_unknown_bkd_variables_are_ignored(clean_env) -> None:
    clean_env.setenv("BKD_FAKE_EPOCH_SECONDS", "0.5")  # a test-only knob, not a setting
    assert settings().model_dump() == {field: None for field in Settings.model_fields}


def test_settings_are_read_afresh_on_each_call(clean_env) -> None:
    assert settings().results_dir is None
    clean_env.setenv("BKD_RESULTS_DIR", "/r1")
    assert settings().results_dir == Path("/r1")
    clean_env.setenv("BKD_RESULTS_DIR", "/r2")
    assert settings().results_dir == Path("/r2")


def test_settings_are_frozen(clean_env) -> None:
    with pytest.raises(ValidationError, match="frozen"):
        settings().data = Path("/elsewhere")


def test_cache_dir_defaults_to_cache_under_the_results_root(clean_env, tmp_path) -> None:
    assert cache_dir_for(tmp_path / "results") == tmp_path / "results" / "cache"


def test_cache_dir_is_absolute_for_a_relative_results_root(clean_env, tmp_path) -> None:
    clean_env.chdir(tmp_path)
    got = cache_dir_for(Path("results"))
    assert got.is_absolute() and got == tmp_path.resolve() / "results" / "cache"


def test_bkd_cache_dir_overrides_the_results_root(clean_env, tmp_path) -> None:
    clean_env.setenv("BKD_CACHE_DIR", str(tmp_path / "shared" / "cache"))
    assert cache_dir_for(tmp_path / "results") == tmp_path / "shared" / "cache"


def test_relative_bkd_cache_dir_is_made_absolute(clean_env, tmp_path) -> None:
    clean_env.chdir(tmp_path)
    clean_env.setenv("BKD_CACHE_DIR", "teachers")
    assert cache_dir_for(Path("/elsewhere/results")) == tmp_path.resolve() / "teachers"


def test_an_object_store_bkd_cache_dir_stays_a_uri(clean_env, tmp_path) -> None:
    clean_env.setenv("BKD_CACHE_DIR", "s3://bucket/cache")
    assert cache_dir_for(Path("/elsewhere/results")) == "s3://bucket/cache"


def test_empty_variables_count_as_unset(clean_env, tmp_path) -> None:
    """`VAR=` in a shell or a job's env_vars means "not set", as `os.environ.get(..) or` did."""
    for name in ENV_NAMES:
        clean_env.setenv(name, "")
    assert settings().model_dump() == {field: None for field in Settings.model_fields}
    assert cache_dir_for(tmp_path / "results") == tmp_path / "results" / "cache"

"""Every environment variable bkd-sweep reads, in one typed object.

The README's "Environment" table lists the same fields; `bkd-sweep` never reads
``os.environ`` for its own variables anywhere else. Settings are read afresh on each call
(cheap), so a test or a Ray job that sets a variable sees it at once.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_RESULTS_ROOT = "results"  # relative to the study file's folder when not absolute


class Settings(BaseSettings):
    """``BKD_*`` variables (plus the two standard ones bkd-sweep honours)."""

    # an empty variable counts as unset (as `os.environ.get(name) or default` did)
    model_config = SettingsConfigDict(env_prefix="BKD_", extra="ignore", frozen=True,
                                      env_ignore_empty=True)

    storage: str | None = Field(
        None, description="Storage root (a shared path or s3://bucket/prefix) holding every "
        "study's journal, Parquet, checkpoints and teacher cache; overrides the study's "
        "`storage:`. `--storage` overrides it.")
    results_dir: Path | None = Field(
        None, description="Older name of the storage root (a local path); used when neither "
        "`--storage`, BKD_STORAGE nor the study's `storage:` is set.")
    cache_dir: str | None = Field(  # a str: a Path would fold s3://b/c into s3:/b/c
        None, description="Teacher cache (trained teachers, teacher evaluations), a shared "
        "path or s3://bucket/prefix; default <results root>/cache.")
    data: Path | None = Field(
        None, description="Conventional dataset root used by the shipped studies as ${BKD_DATA}.")
    ckpt: Path | None = Field(
        None, description="Conventional checkpoint root used by the shipped studies as ${BKD_CKPT}.")
    mlflow_tracking_uri: str | None = Field(
        None, validation_alias=AliasChoices("MLFLOW_TRACKING_URI"),
        description="MLflow tracking URI when the study sets none (standard MLflow variable).")
    ray_address: str | None = Field(
        None, validation_alias=AliasChoices("RAY_ADDRESS"),
        description="Ray cluster to join instead of starting a local one (standard Ray variable).")
    node_wait_s: float | None = Field(
        None, ge=0, description="Seconds a cluster driver waits for a node that fits one trial "
        "(nodes still starting, an autoscaler) before it refuses the sweep; default 600.")


NODE_WAIT_S = 600.0  # node_wait_s unset


def settings() -> Settings:
    """The environment as it is now. A bad value is bad input: one line (a StudyError) naming
    the variable, what it holds and what is allowed, never pydantic's traceback."""
    try:
        return Settings()
    except ValidationError as err:
        from bkd_sweep.config.errors import StudyError  # config imports this module

        first = err.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else ""
        name = env_var(field) if field in Settings.model_fields else field or "BKD_*"
        raise StudyError(f"environment variable {name}: {first['msg']} "
                         f"(got {first.get('input')!r})") from None


def env_var(field: str) -> str:
    """The environment variable behind a Settings field ('cache_dir' -> 'BKD_CACHE_DIR')."""
    alias = Settings.model_fields[field].validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return (Settings.model_config["env_prefix"] + field).upper()


def cache_dir_for(results_root: Path) -> Path | str:
    """The teacher cache: $BKD_CACHE_DIR (an object-store URI as given, a path made
    absolute), else <results root>/cache (absolute)."""
    chosen = settings().cache_dir
    if chosen and "://" in chosen:
        return chosen
    return Path(chosen or Path(results_root) / "cache").expanduser().resolve()

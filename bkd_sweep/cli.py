"""bkd-sweep: validate | plan | run | submit | status | train | report | results | schema.

Bad input (a malformed study, a missing dataset) prints one line and exits with code 2,
with nothing written. Heavy imports (torch, ray, mlflow) happen inside the commands that
need them, so `validate` and `plan` stay fast.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from bkd_sweep.config import StudyError, apply_overrides, load_study, parse_override
from bkd_sweep.redact import redact_text
from bkd_sweep.settings import cache_dir_for, settings

EXIT_BAD_INPUT = 2


class UsageError(Exception):
    """Bad input that is not a study-file error: one line, exit 2."""


def _load(path: str):
    return load_study(path)


def _load_sweep(args: argparse.Namespace):
    """The study of run/submit/status with its --set overrides and --storage applied."""
    overrides = dict(parse_override(item) for item in getattr(args, "set", None) or [])
    loaded = load_study(args.study, overrides or None)
    return loaded.with_storage(getattr(args, "storage", None))


def cmd_validate(args: argparse.Namespace) -> int:
    from bkd_sweep.preflight import check_references

    for path in args.studies:
        loaded = _load(path)
        check_references(loaded)
        study = loaded.study
        from bkd_sweep.space import count_trials

        extra = f" (unset: {', '.join(loaded.unresolved)})" if loaded.unresolved else ""
        print(f"{path}: ok: study {study.name!r}, {count_trials(study.search)} trials{extra}")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from bkd_sweep.engine import plan
    from bkd_sweep.preflight import check_references

    from bkd_sweep.engine.plan import Cluster

    try:
        cluster = Cluster.parse(args.cluster) if args.cluster else None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    loaded = _load(args.study)
    check_references(loaded)
    print(plan(loaded, cluster).render())
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from bkd_sweep.engine import run_study
    from bkd_sweep.preflight import check_references

    if args.retry_failed and not args.resume:
        raise UsageError("--retry-failed reruns the failed trials of an earlier sweep: "
                         "use it with --resume")
    from bkd_sweep.engine.lease import DriverLeaseLost

    loaded = _load_sweep(args)
    check_references(loaded)
    try:
        summary = run_study(loaded, resume=args.resume, retry_failed=args.retry_failed)
    except DriverLeaseLost as exc:
        print(f"error: {exc}; this driver stopped, that one goes on", file=sys.stderr)
        return 1
    print(summary.render() if hasattr(summary, "render") else summary)
    return 0 if getattr(summary, "ok", True) else 1


def cmd_submit(args: argparse.Namespace) -> int:
    from bkd_sweep.engine import submit_study
    from bkd_sweep.preflight import check_references

    if args.retry_failed and not args.resume:
        raise UsageError("--retry-failed reruns the failed trials of an earlier sweep: "
                         "use it with --resume")
    loaded = _load_sweep(args)
    check_references(loaded)
    address = args.address or settings().ray_address
    if not address:
        raise UsageError("submit: give --address http://HOST:8265 or set RAY_ADDRESS")
    from bkd_sweep.engine.submit import JobFailedError, SweepOptions

    options = SweepOptions(resume=args.resume, retry_failed=args.retry_failed)
    try:
        job_id = submit_study(loaded, address=address, wait=not args.no_wait, options=options,
                              python=args.python)
    except JobFailedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"job id: {job_id}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from bkd_sweep.engine.status import sweep_status

    loaded = _load_sweep(args)
    try:
        status = sweep_status(loaded)
    except FileNotFoundError:
        raise  # a missing study or file already says which, in one line
    except OSError as exc:
        raise _unreadable(loaded.results_location().uri, exc) from None
    print(status.render())
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from bkd_sweep.preflight import check_trial_runnable, writable_dir

    loaded = _load(args.study)
    overrides = dict(parse_override(item) for item in args.set or [])
    try:
        config = apply_overrides(loaded.study.base_config(), overrides)
    except StudyError as exc:
        raise StudyError(exc.message, file=loaded.path, field=exc.field) from None
    check_trial_runnable(loaded, config)
    out = Path(args.out).resolve() if args.out else None
    checkpoint_dir = Path(args.checkpoint_dir).resolve() if args.checkpoint_dir else None
    for flag, path, folder in (("--out", out, out and out.parent),
                               ("--checkpoint-dir", checkpoint_dir, checkpoint_dir)):
        if path is not None and (not writable_dir(folder) or path is out and out.is_dir()):
            raise UsageError(f"{flag} {path}: cannot be written (checked before training)")
    from bkd_sweep.trial import run_trial

    def report(metrics, _checkpoint_dir):
        terms = " ".join(f"{k}={v:.4g}" for k, v in metrics.loss_terms.items())
        print(f"epoch {metrics.epoch}: top1 {metrics.top1:.2f} top5 {metrics.top5:.2f} "
              f"loss {metrics.loss:.4f} ({terms}) lr {metrics.lr:.3g} "
              f"{metrics.wall_seconds:.1f}s", flush=True)

    result = run_trial(config, report, checkpoint_dir=checkpoint_dir,
                       cache_dir=cache_dir_for(loaded.results_dir().parent))
    payload = result_summary(result)
    text = json.dumps(payload, indent=2)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(f"wrote {out}")
    print(f"{result.status}: test top1 {payload['test_top1']} (val {payload['val_top1']}, epoch "
          f"{payload['selected_epoch']}) energy {payload['energy_mj']} mJ "
          f"in {result.wall_seconds:.1f}s" + (f" ({result.reason})" if result.reason else ""))
    return 0 if result.status == "completed" else 1


def result_summary(result) -> dict:
    """The result JSON of `bkd-sweep train`: the headline numbers plus the full TrialResult."""
    from bkd_sweep.records import result_metrics

    metrics = result_metrics(result)
    energy = result.energy
    return {
        "status": result.status, "reason": result.reason, **metrics,
        "selection_on_test": result.selection_on_test,
        "firing_rates": energy.firing_rates if energy else {},
        "losses_per_epoch": [{"epoch": h.epoch, "loss": h.loss, **h.loss_terms}
                             for h in result.history],
        "wall_seconds": result.wall_seconds, "epochs_run": result.epochs_run,
        "warnings": result.warnings,
        "result": result.model_dump(mode="json"),
    }


def cmd_report(args: argparse.Namespace) -> int:
    from bkd_sweep.report import build_report
    from bkd_sweep.report.build import ReportSpecError
    from bkd_sweep.storage import StorageError
    from bkd_sweep.tracking import ResultStore
    from bkd_sweep.tracking.parquet_files import DamagedFileError, SchemaVersionError

    location, name = _study_folder(args)
    try:
        stored = ResultStore(location).has_tables()
    except OSError as exc:
        raise _unreadable(location.uri, exc) from None
    if not stored:
        raise UsageError(f"{location.uri}: no trials.parquet (run the study first)")
    out_dir = Path(args.out).resolve() if args.out else (Path.cwd() / "reports" / name)
    try:
        output = build_report(location, out_dir)
    except (FileNotFoundError, DamagedFileError, SchemaVersionError, StorageError,
            ReportSpecError) as exc:
        raise UsageError(_first_line(exc)) from None
    print(f"report: {output.index_html} ({len(output.files)} files, {output.seconds:.1f}s)")
    if not args.no_mlflow:
        from bkd_sweep.tracking.mlflow_tracker import attach_report

        attach_report(location, out_dir)
    return 0


def _study_folder(args: argparse.Namespace):
    """The study folder `report` and `results` read, and its name: a study
    file's <storage root>/<name> (--storage > BKD_STORAGE > its storage: > ./results, as for
    status), a study name under --storage, or a results directory or URI (s3://.../<study>)."""
    from bkd_sweep.storage import Location, StorageError, is_remote

    target = args.target
    try:
        if target.endswith((".yaml", ".yml")):
            loaded = _load(target).with_storage(args.storage)
            return loaded.results_location(), loaded.study.name
        if args.storage:
            if is_remote(target) or "/" in target or target in (".", ".."):
                raise UsageError(f"{args.command}: --storage goes with a study file or a study "
                                 f"name, not a results directory ({target})")
            location = Location.of(args.storage).child(target)
        else:
            location = Location.of(target)  # a relative path made absolute
    except StorageError as exc:
        raise UsageError(str(exc)) from None
    return location, location.name


def _unreadable(where, exc: OSError) -> "UsageError":
    """One line for an unreachable object store or a folder that cannot be read."""
    return UsageError(f"storage {where}: cannot be read ({_first_line(exc)})")


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def cmd_results(args: argparse.Namespace) -> int:
    from bkd_sweep.results import load, rebuild, summary_table
    from bkd_sweep.tracking.parquet_files import DamagedFileError, SchemaVersionError

    target = args.target
    if target.endswith((".yaml", ".yml")) or args.storage:  # as `report` finds it
        target, name = _study_folder(args)
        try:
            ran = target.is_dir()
        except OSError as exc:
            raise _unreadable(target.uri, exc) from None
        if not ran:  # a name or a directory says what exists (study_location)
            raise UsageError(f"no results of {name!r} in {target.uri} (run the study first)")
    try:
        if args.rebuild:
            for line in rebuild(target).lines():
                print(line)
            return 0
        print(summary_table(load(target)))
    except (FileNotFoundError, DamagedFileError, SchemaVersionError) as exc:  # one line, exit 2
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise _unreadable(target, exc) from None
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from bkd_sweep.config import study_json_schema

    print(json.dumps(study_json_schema(), indent=2))
    return 0


def _add_sweep_options(p: argparse.ArgumentParser) -> None:
    """The options `run` and `submit` share (a submitted job runs `run` with them)."""
    p.add_argument("study")
    p.add_argument("--resume", action="store_true", help="finish an interrupted sweep")
    p.add_argument("--retry-failed", action="store_true",
                   help="with --resume: run the sweep's failed trials again")
    p.add_argument("--set", action="append", metavar="PATH=VALUE",
                   help="override a value of the study file, e.g. --set train.epochs=2 "
                   "(repeatable)")
    p.add_argument("--storage", metavar="PATH_OR_URI",
                   help="storage root (a shared path or s3://bucket/prefix); "
                   "default BKD_STORAGE, else the study's storage:, else ./results")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bkd-sweep", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="check study files (schema, values, references)")
    p.add_argument("studies", nargs="+")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("plan", help="print the trials, resources and a device-hour estimate")
    p.add_argument("study")
    p.add_argument("--cluster", metavar="NODESxGPUS[xCPUS]",
                   help="plan for a cluster instead of this machine, e.g. 8x8")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("run", help="run a study on Ray Tune (local, or RAY_ADDRESS)")
    _add_sweep_options(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("submit", help="submit a study to a Ray cluster through the job API")
    _add_sweep_options(p)
    p.add_argument("--address", help="Ray dashboard address, e.g. http://HOST:8265")
    p.add_argument("--no-wait", action="store_true", help="print the job id and return")
    p.add_argument("--python", help="the head's Python for the job (default: python)")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("status", help="a sweep's progress, best so far and device-hours, "
                       "read from its storage root (any machine that sees it)")
    p.add_argument("study")
    p.add_argument("--storage", metavar="PATH_OR_URI", help="storage root (as for run)")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("train", help="run one trial from the study's base config")
    p.add_argument("study")
    p.add_argument("--set", action="append", metavar="PATH=VALUE",
                   help="dotted override, e.g. --set distill.mode=mixed (repeatable)")
    p.add_argument("--out", help="write the result JSON here")
    p.add_argument("--checkpoint-dir", help="checkpoint every epoch here; resume if present")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("report", help="tables and plots from a study's Parquet results")
    p.add_argument("target", help="a study file, a results directory or URI "
                   "(s3://bucket/prefix/<study>), or a study name with --storage")
    p.add_argument("--storage", metavar="PATH_OR_URI", help="storage root (as for run)")
    p.add_argument("--out", help="output directory (default reports/<name>)")
    p.add_argument("--no-mlflow", action="store_true",
                   help="do not attach the report to the sweep's MLflow parent run")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("results", help="a summary table of a study's results")
    p.add_argument("target", help="a study name, results directory (or s3://...) or study file")
    p.add_argument("--storage", metavar="PATH_OR_URI", help="storage root (as for run)")
    p.add_argument("--rebuild", action="store_true",
                   help="rebuild the Parquet tables from the per-trial records "
                        "(trials/<id>/result.json); damaged files are moved aside")
    p.set_defaults(func=cmd_results)

    p = sub.add_parser("schema", help="print the study JSON Schema (for editors)")
    p.set_defaults(func=cmd_schema)
    return parser


def is_input_error(exc: BaseException) -> bool:
    """Errors that mean bad input (print one line, exit 2) rather than a bug."""
    from bkd_sweep.tracking.parquet_files import DamagedFileError

    from bkd_sweep.storage import StorageError

    if isinstance(exc, (DamagedFileError, StorageError)):  # before the data registry (torch)
        return True
    from bkd_sweep.data import DataError
    from bkd_sweep.registry import UnknownNameError

    return isinstance(exc, (DataError, UnknownNameError, StudyError))


def use_system_allocator() -> None:
    """Arrow's allocator for this command: the system one unless the user chose one with
    ARROW_DEFAULT_MEMORY_POOL. The pip wheels' default (mimalloc) spent most of `report`'s
    time in the kernel on 10,000 trials x 300 epochs (sys 1.8-5.6 s, wall 7.6-11.9 s; system
    allocator: sys 0.6-1.1 s, wall 6.1-6.9 s)."""
    if not os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        import pyarrow as pa

        pa.set_memory_pool(pa.system_memory_pool())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    use_system_allocator()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (StudyError, UsageError) as exc:
        print(f"error: {redact_text(str(exc))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # data errors and the like: one line, not a traceback
        if is_input_error(exc) and not args.verbose:
            print(f"error: {redact_text(_first_line(exc))}", file=sys.stderr)
            return EXIT_BAD_INPUT
        raise


if __name__ == "__main__":
    sys.exit(main())

"""Headless use: `python -m minillm_dash run|list|export|models` (same database as the dashboard)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from pathlib import Path
from typing import Sequence

from minillm_dash import data
from minillm_dash.config import ExperimentConfig, TrainSettings, load_config_file
from minillm_dash.db import Database
from minillm_dash.errors import UserInputError
from minillm_dash.variants import PRESETS

EXPORT_FORMATS = ("csv", "json", "parquet")


def _csv_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _train_flags() -> list[tuple[str, type, object]]:
    """(name, type, default) of every training setting: each one is a `run` flag, none forgotten."""
    defaults = TrainSettings()
    kinds = {"int": int, "float": float, "str": str, "bool": bool, "str | None": str}
    return [(f.name, kinds[str(f.type)], getattr(defaults, f.name)) for f in dataclasses.fields(TrainSettings)]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m minillm_dash",
                                     description="Distil a teacher LM into a student with several loss variants "
                                                 "side by side, and compare their convergence.")
    parser.add_argument("--db", default=None, help="SQLAlchemy database URL (default: SQLite under storage/)")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run an experiment: variants × seeds")
    run.add_argument("--config", help="YAML or JSON experiment file (flags given explicitly override it)")
    run.add_argument("--name", help="experiment name")
    run.add_argument("--variants", help=f"comma-separated presets: {', '.join(PRESETS)}")
    run.add_argument("--seeds", help="comma-separated integer seeds (default 0)")
    run.add_argument("--data", help="prompt dataset file (JSONL, JSON, CSV, Parquet, TXT); default: built-in set")
    run.add_argument("--teacher", help="'default', a hub id or a local folder")
    run.add_argument("--student", help="'pruned:K' (teacher copy keeping K layers), a hub id or a local folder")
    for name, kind, default in _train_flags():
        flag = f"--{name.replace('_', '-')}"
        if kind is bool:
            run.add_argument(flag, action="store_true", default=None, help=f"training setting (default {default})")
        else:
            run.add_argument(flag, type=kind, help=f"default {default}")
    run.add_argument("--trust-remote-code", action="store_true",
                     help="allow hub/local models to run their own Python code (off unless given)")
    run.add_argument("--max-concurrent", type=int, default=2, help="runs training at once (default 2)")
    run.add_argument("--quiet", action="store_true", help="no progress bars")

    sub.add_parser("list", help="list experiments and their runs")

    export = sub.add_parser("export", help="export full histories with their configs")
    target = export.add_mutually_exclusive_group(required=True)
    target.add_argument("--run", type=int, help="run id")
    target.add_argument("--experiment", type=int, help="experiment id")
    export.add_argument("--format", choices=EXPORT_FORMATS, default="csv")
    export.add_argument("--out", required=True, help="output file")

    sub.add_parser("models", help="convert and cache the embedded default teacher under models/")
    return parser


def experiment_from_args(args: argparse.Namespace) -> ExperimentConfig:
    """Config file first (if any), then explicit flags on top."""
    raw = load_config_file(args.config) if args.config else {}
    train = dict(raw.get("train", {}) or {})
    for name, _, _ in _train_flags():
        value = getattr(args, name)
        if value is not None:
            train[name] = value
    raw["train"] = train
    if args.variants:
        raw["variants"] = _csv_list(args.variants)
    raw.setdefault("variants", ["minillm", "minillm_wsingle"])
    if args.seeds:
        try:
            raw["seeds"] = [int(s) for s in _csv_list(args.seeds)]
        except ValueError as exc:
            raise UserInputError(f"--seeds must be comma-separated integers, got '{args.seeds}'") from exc
    for key in ("name", "teacher", "student"):
        if getattr(args, key):
            raw[key] = getattr(args, key)
    if args.trust_remote_code:
        raw["trust_remote_code"] = True
    raw.setdefault("name", "+".join(v if isinstance(v, str) else v.get("name", "custom") for v in raw["variants"]))
    return ExperimentConfig.from_dict(raw)


def cmd_run(args: argparse.Namespace, db: Database) -> int:
    from minillm_dash.runner import Runner, configure_cpu_threads

    exp = experiment_from_args(args)  # refuses bad variants/settings before data or models
    if args.data:
        dataset = data.load_dataset_file(args.data)  # validated before any model loads
        for warning in dataset.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        exp = dataclasses.replace(exp, dataset_id=db.add_dataset(dataset))
    configure_cpu_threads(args.max_concurrent)
    runner = Runner(db, max_concurrent=args.max_concurrent)
    say = (lambda message: print(message, file=sys.stderr)) if not args.quiet else None
    experiment_id = runner.launch(exp, progress=say)
    print(f"experiment {experiment_id}: {len(exp.runs())} runs queued", file=sys.stderr)
    try:
        _follow(db, runner, experiment_id, quiet=args.quiet)
    except KeyboardInterrupt:
        print("interrupted: cancelling runs", file=sys.stderr)
        runner.shutdown(cancel=True)
        return 130
    runner.shutdown(cancel=False)
    runs = db.list_runs(experiment_id)
    for run in runs:
        print(f"run {run['id']}: {run['variant']} seed {run['seed']}: {run['status']}"
              + (f" ({run['error']})" if run.get("error") else ""))
    return 0 if all(r["status"] == "done" for r in runs) else 1


def _follow(db: Database, runner, experiment_id: int, *, quiet: bool) -> None:
    """Progress bars read from the database, exactly what the dashboard sees."""
    runs = db.list_runs(experiment_id)
    bars = {}
    if not quiet:
        from tqdm import tqdm

        bars = {r["id"]: tqdm(total=r["total_steps"], desc=f"{r['variant']} s{r['seed']}", position=i, leave=True,
                              file=sys.stderr) for i, r in enumerate(runs)}
    while not runner.wait(timeout=1.0):
        _update_bars(db, bars)
    _update_bars(db, bars)
    for bar in bars.values():
        bar.close()


def _update_bars(db: Database, bars: dict) -> None:
    if not bars:
        return
    steps = db.max_steps(list(bars))
    for run_id, bar in bars.items():
        bar.update(max(0, steps.get(run_id, 0) - bar.n))


def cmd_list(db: Database) -> int:
    for exp in db.list_experiments():
        print(f"experiment {exp['id']}: {exp['name']}")
        for run in db.list_runs(exp["id"]):
            print(f"  run {run['id']}: {run['variant']:<16} seed {run['seed']:<3} {run['status']:<11} "
                  f"{run.get('step') or 0}/{run['total_steps']}")
    return 0


def cmd_export(args: argparse.Namespace, db: Database) -> int:
    from minillm_dash.export import export_history

    if args.run is not None:
        if db.get_run(args.run) is None:
            raise UserInputError(f"no run with id {args.run}")
        run_ids = [args.run]
    else:
        run_ids = [r["id"] for r in db.list_runs(args.experiment)]
        if not run_ids:
            raise UserInputError(f"no runs in experiment {args.experiment}")
    path = export_history(db, run_ids, args.format, Path(args.out))
    print(f"wrote {path}")
    return 0


def cmd_models() -> int:
    from minillm_dash.modeling import convert_default_teacher

    start = time.perf_counter()
    path = convert_default_teacher(progress=lambda m: print(m, file=sys.stderr))
    print(f"default teacher ready in {path} ({time.perf_counter() - start:.1f} s)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        if args.command == "models":
            return cmd_models()
        db = Database(args.db)
        if args.command == "run":
            return cmd_run(args, db)
        if args.command == "list":
            return cmd_list(db)
        return cmd_export(args, db)
    except UserInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

"""``eudravigloader``: load E2B(R3) files, manage the database schema, print the data dictionary."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from loaders.base import LoadOutcome, SQLAlchemyLoader
from loaders.registry import UnknownLoaderError, get_loader
from py_load_eudravigilance.mapping.catalog import all_columns
from py_load_eudravigilance.pipeline import RunSummary, redact_dsn, run_load
from py_load_eudravigilance.schema import FILE_HISTORY_TABLE

DSN_ENV = "PY_LOAD_EUDRAVIGILANCE_DATABASE__DSN"
SOURCE_ENV = "PY_LOAD_EUDRAVIGILANCE_SOURCE_URI"
DEFAULT_DSN = "sqlite:///eudravig.db"


def resolve_dsn(arg: str | None) -> str:
    return arg or os.environ.get(DSN_ENV) or DEFAULT_DSN


def cmd_dictionary(args: argparse.Namespace) -> int:
    columns = all_columns()
    if args.format == "json":
        json.dump(
            [{"table": c.table, "column": c.name, "element": c.element, "name": c.description, "type": c.type.value} for c in columns],
            sys.stdout,
            indent=2,
            ensure_ascii=False,
        )
        sys.stdout.write("\n")
        return 0
    current = None
    for c in columns:
        if c.table != current:
            current = c.table
            sys.stdout.write(f"\n### `{c.table}`\n\n| column | element | name | type |\n|---|---|---|---|\n")
        name = c.description.replace("|", "\\|")
        sys.stdout.write(f"| `{c.name}` | {c.element} | {name} | {c.type.value} |\n")
    return 0


def _report(outcome: LoadOutcome, summary: RunSummary, started: float, interactive: bool) -> None:
    if not interactive:
        return
    loaded = summary.totals()["messages_total"]
    rate = loaded / max(time.perf_counter() - started, 1e-9)
    sys.stderr.write(
        f"\r{len(summary.outcomes)}/{summary.files_found - summary.files_skipped} files, {loaded} messages, {rate:,.0f} ICSRs/s "
    )
    sys.stderr.flush()


def cmd_run(args: argparse.Namespace) -> int:
    dsn = resolve_dsn(args.dsn)
    source = args.source or os.environ.get(SOURCE_ENV)
    if not source:
        sys.stderr.write(f"error: no SOURCE given and {SOURCE_ENV} is not set\n")
        return 1
    started = time.perf_counter()
    interactive = sys.stderr.isatty()
    try:
        summary = run_load(source, dsn, args.mode, args.workers, lambda o, s: _report(o, s, started, interactive))
    except (FileNotFoundError, UnknownLoaderError, ValueError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    if interactive:
        sys.stderr.write("\n")
    totals = summary.totals()
    print(
        f"files: {summary.files_found} found, {summary.files_skipped} skipped (already loaded), "
        f"{len(summary.outcomes)} loaded, {len(summary.failures)} failed"
    )
    print(
        f"cases: {totals['cases_inserted']} inserted, {totals['cases_updated']} updated, "
        f"{totals['cases_skipped_older']} skipped as older, {totals['cases_nullified']} nullified; "
        f"messages rejected: {totals['messages_rejected']}"
    )
    for name, error in summary.failures:
        print(f"failed: {name}: {error}")
    for outcome in summary.outcomes:
        if outcome.error:
            print(f"partial: {outcome.file_name}: {outcome.error}")
    print(f"database: {redact_dsn(dsn)}")
    return summary.exit_code


def _sql_loader(dsn: str) -> SQLAlchemyLoader:
    loader = get_loader(dsn)
    if not isinstance(loader, SQLAlchemyLoader):
        raise UnknownLoaderError("this command needs a SQLAlchemy-based loader")
    return loader


def cmd_init_db(args: argparse.Namespace) -> int:
    dsn = resolve_dsn(args.dsn)
    get_loader(dsn).create_all_tables()
    print(f"schema ready in {redact_dsn(dsn)}")
    return 0


def cmd_validate_db_schema(args: argparse.Namespace) -> int:
    loader = _sql_loader(resolve_dsn(args.dsn))
    report = loader.schema_report()
    for label, items in (
        ("missing table", report.missing_tables),
        ("missing column", report.missing_columns),
        ("mistyped column", report.mistyped_columns),
        ("extra column", report.extra_columns),
    ):
        for item in items:
            print(f"{label}: {item}")
    print("schema is valid" if report.ok else "schema is NOT valid")
    return 0 if report.ok else 1


def cmd_status(args: argparse.Namespace) -> int:
    loader = _sql_loader(resolve_dsn(args.dsn))
    history = loader.table(FILE_HISTORY_TABLE)
    with loader.engine.connect() as conn:
        rows = conn.execute(select(history).order_by(history.c.finished_at)).mappings().all()
    for row in rows:
        print(
            f"{row['status']:<9} {row['file_name']}  messages={row['messages_total']} inserted={row['cases_inserted']} "
            f"updated={row['cases_updated']} skipped={row['cases_skipped_older']} nullified={row['cases_nullified']} "
            f"rejected={row['messages_rejected']}" + (f"  error={row['error']}" if row["error"] else "")
        )
    if not rows:
        print("no files loaded yet")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from py_load_eudravigilance.fixtures.generator import CorpusSpec, write_corpus

    paths = write_corpus(Path(args.output), CorpusSpec(files=args.files, cases_per_file=args.cases, seed=args.seed))
    print(f"wrote {len(paths)} files to {args.output}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eudravigloader", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="load E2B(R3) files into the database")
    run.add_argument("source", nargs="?", help=f"folder, glob or file (default: ${SOURCE_ENV})")
    run.add_argument(
        "--mode", choices=("delta", "full"), default="delta", help="delta skips files already loaded; full truncates and reloads"
    )
    run.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="parsing processes")
    run.add_argument("--dsn", help=f"SQLAlchemy URL (default: ${DSN_ENV} or {DEFAULT_DSN})")
    run.set_defaults(func=cmd_run)

    for name, func, text in (
        ("init-db", cmd_init_db, "create every table"),
        ("validate-db-schema", cmd_validate_db_schema, "compare the database with the data dictionary"),
        ("status", cmd_status, "show the file history"),
    ):
        command = sub.add_parser(name, help=text)
        command.add_argument("--dsn", help=f"SQLAlchemy URL (default: ${DSN_ENV} or {DEFAULT_DSN})")
        command.set_defaults(func=func)

    dictionary = sub.add_parser("dictionary", help="print the data dictionary")
    dictionary.add_argument("--format", choices=("json", "markdown"), default="markdown")
    dictionary.set_defaults(func=cmd_dictionary)

    generate = sub.add_parser("generate", help="write synthetic E2B(R3) batch files")
    generate.add_argument("output")
    generate.add_argument("--files", type=int, default=3)
    generate.add_argument("--cases", type=int, default=20, help="cases per file")
    generate.add_argument("--seed", type=int, default=7)
    generate.set_defaults(func=cmd_generate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (SQLAlchemyError, OSError, UnknownLoaderError) as exc:
        # One clear line, never a traceback; SQLAlchemy errors do not carry the password
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        sys.stderr.write(f"error: {type(exc).__name__}: {first_line}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())

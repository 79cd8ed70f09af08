"""``eudravigloader``: load E2B(R3) files, manage the database schema, print the data dictionary."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from loaders.contract import COMPLETED, FAILED, PARTIAL, Loader, LoadOutcome
from loaders.readback import TableReader
from loaders.registry import UnknownLoaderError, loader_for
from py_load_eudravigilance.errors import E2BError
from py_load_eudravigilance.mapping.catalog import all_columns
from py_load_eudravigilance.meddra import MeddraReleaseError, read_release
from py_load_eudravigilance.parsing.xsd import load_schema, validate_file
from py_load_eudravigilance.pipeline import RunSummary, redact_dsn, run_load
from py_load_eudravigilance.schema import FILE_HISTORY_TABLE
from py_load_eudravigilance.settings import CONFIG_ENV, DEFAULT_DSN, DSN_ENV, SOURCE_ENV, Settings, SettingsError, load_settings
from py_load_eudravigilance.signals import STATISTICS_TABLE, markdown_table, top_pairs
from py_load_eudravigilance.sources import list_objects, local_copy, object_name, parse_location


def settings_for(args: argparse.Namespace) -> Settings:
    """Settings with this command's options on top of the environment and the configuration file."""
    overrides: dict[str, object] = {"database": {"dsn": getattr(args, "dsn", None)}}
    for name in ("mode", "workers"):
        overrides[name] = getattr(args, name, None)
    overrides["source_uri"] = getattr(args, "source", None)
    overrides["signals"] = {"drug_roles": getattr(args, "drug_roles", None)}
    return load_settings(overrides, getattr(args, "config", None))


def configured_loader(settings: Settings) -> Loader:
    """The loader of the configured database, in its configured schema if one is set."""
    return loader_for(settings.database.dsn, settings.database.db_schema)


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
    settings = settings_for(args)
    dsn = settings.database.dsn
    if not settings.source_uri:
        sys.stderr.write(f"error: no SOURCE given, {SOURCE_ENV} is not set and the configuration has no source_uri\n")
        return 1
    started = time.perf_counter()
    interactive = sys.stderr.isatty()
    try:
        summary = run_load(
            settings.source_uri,
            configured_loader(settings),
            settings.mode,
            settings.workers,
            lambda o, s: _report(o, s, started, interactive),
            quarantine=settings.quarantine_uri,
        )
    except (FileNotFoundError, UnknownLoaderError, ValueError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    if interactive:
        sys.stderr.write("\n")
    for line in run_report(summary):
        print(line)
    print(f"database: {redact_dsn(dsn)}")
    return summary.exit_code


def run_report(summary: RunSummary) -> list[str]:
    """What a run did, as the CLI prints it: counts, then each file that did not complete, and why."""
    totals = summary.totals()
    lines = [
        f"files: {summary.files_found} found, {summary.files_skipped} skipped (already loaded), "
        + ", ".join(f"{len(summary.with_status(status))} {status}" for status in (COMPLETED, PARTIAL, FAILED)),
        f"cases: {totals['cases_inserted']} inserted, {totals['cases_updated']} updated, "
        f"{totals['cases_skipped_older']} skipped as older, {totals['cases_nullified']} nullified, "
        f"{totals['versions_after_nullification']} newer versions of nullified cases not applied; "
        f"messages rejected: {totals['messages_rejected']}",
    ]
    for outcome in summary.outcomes:
        if outcome.status == COMPLETED:
            continue
        why = outcome.error or f"{outcome.messages_rejected} of {outcome.messages_total} messages rejected"
        lines.append(f"{outcome.status}: {outcome.file_name}: {why}")
        for position, case_id, element, reason in outcome.rejections:
            where = ", ".join(
                part
                for part in (f"message #{position}", f"case {case_id}" if case_id else "", f"element {element}" if element else "")
                if part
            )
            lines.append(f"  rejected: {where}: {reason}")
        if outcome.messages_rejected > len(outcome.rejections):
            lines.append(f"  ... and {outcome.messages_rejected - len(outcome.rejections)} more (every one is in etl_quarantine)")
    return lines


def cmd_init_db(args: argparse.Namespace) -> int:
    settings = settings_for(args)
    configured_loader(settings).create_all_tables()
    print(f"schema ready in {redact_dsn(settings.database.dsn)}")
    return 0


def cmd_validate_db_schema(args: argparse.Namespace) -> int:
    report = configured_loader(settings_for(args)).schema_report()
    for label, items in (
        ("missing table", report.missing_tables),
        ("missing column", report.missing_columns),
        ("mistyped column", report.mistyped_columns),
        ("missing view", report.missing_views),
        ("missing index", report.missing_indexes),
        ("extra column", report.extra_columns),
    ):
        for item in items:
            print(f"{label}: {item}")
    print("schema is valid" if report.ok else "schema is NOT valid (`eudravigloader init-db` creates what is missing)")
    return 0 if report.ok else 1


def cmd_meddra_load(args: argparse.Namespace) -> int:
    settings = settings_for(args)
    release = read_release(Path(args.directory), args.version)
    loader = configured_loader(settings)
    loader.create_all_tables()
    loaded = loader.load_meddra(release)
    counts = ", ".join(f"{table.removeprefix('meddra_')}={rows}" for table, rows in loaded.items())
    print(f"MedDRA {release.version} loaded into {redact_dsn(settings.database.dsn)}: {counts}")
    return 0


def cmd_signals(args: argparse.Namespace) -> int:
    settings = settings_for(args)
    loader = configured_loader(settings)
    loader.create_all_tables()
    summary = loader.refresh_drug_event_statistics(settings.signals.drug_roles)
    print(
        f"drug_event_statistics refreshed in {redact_dsn(settings.database.dsn)}: {summary.pairs} drug-event pairs, "
        f"{summary.signals} signals (drug roles {', '.join(settings.signals.drug_roles)})"
    )
    reader = TableReader(loader.engine, settings.database.db_schema)
    with reader.engine.connect() as conn:
        rows = conn.execute(top_pairs(reader.table(STATISTICS_TABLE), args.top, args.drug)).mappings().all()
    if rows:
        print(markdown_table(rows))
    elif args.drug:
        print(f"no pairs for drug {args.drug.strip()!r}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    settings = settings_for(args)
    reader = TableReader(configured_loader(settings).engine, settings.database.db_schema)
    history = reader.table(FILE_HISTORY_TABLE)
    with reader.engine.connect() as conn:
        rows = conn.execute(select(history).order_by(history.c.finished_at)).mappings().all()
    for row in rows:
        finished = f"{row['finished_at']:%Y-%m-%d %H:%M:%S}" if row["finished_at"] else "-"
        duration = f"{row['duration_seconds']:.1f}s" if row["duration_seconds"] is not None else "-"
        print(
            f"{row['status']:<9} {finished} {duration:>7}  {row['file_name']}  messages={row['messages_total']} "
            f"inserted={row['cases_inserted']} updated={row['cases_updated']} skipped={row['cases_skipped_older']} "
            f"nullified={row['cases_nullified']} after_nullification={row['versions_after_nullification']} "
            f"rejected={row['messages_rejected']}" + (f"  error={row['error']}" if row["error"] else "")
        )
    if not rows:
        print("no files loaded yet")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    schema = load_schema(Path(args.schema))
    location = parse_location(args.source)
    invalid = 0
    objects = list_objects(location)
    for obj in objects:
        with local_copy(location, obj.key) as path:
            result = validate_file(path, schema, object_name(location, obj.key))
        if result.valid:
            print(f"valid: {result.file_name}")
        else:
            invalid += 1
            print(f"invalid: {result.file_name}: {result.error}")
    print(f"{len(objects) - invalid} valid, {invalid} invalid")
    return 1 if invalid else 0


def cmd_generate(args: argparse.Namespace) -> int:
    from py_load_eudravigilance.fixtures.generator import CorpusSpec, write_corpus

    paths = write_corpus(Path(args.output), CorpusSpec(files=args.files, cases_per_file=args.cases, seed=args.seed))
    print(f"wrote {len(paths)} files to {args.output}")
    return 0


def _version() -> str:
    try:
        return metadata.version("py-load-eudravigilance")
    except metadata.PackageNotFoundError:
        return "(not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eudravigloader", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    def database_options(command: argparse.ArgumentParser) -> None:
        command.add_argument(
            "--dsn", help=f"SQLAlchemy URL (default: ${DSN_ENV}, then database.dsn of the configuration, then {DEFAULT_DSN})"
        )
        command.add_argument("--config", help=f"configuration file (default: ${CONFIG_ENV}, else ./config.yaml if present)")

    run = sub.add_parser("run", help="load E2B(R3) files into the database")
    run.add_argument("source", nargs="?", help=f"folder, glob, file or s3://bucket/prefix/ (default: ${SOURCE_ENV}, then source_uri)")
    run.add_argument(
        "--mode", choices=("delta", "full"), help="delta (default) skips files already loaded; full empties the tables and reloads"
    )
    run.add_argument("--workers", type=int, help="parsing processes (default: all cores)")
    database_options(run)
    run.set_defaults(func=cmd_run)

    for name, func, text in (
        ("init-db", cmd_init_db, "create every table"),
        ("validate-db-schema", cmd_validate_db_schema, "compare the database with the data dictionary"),
        ("status", cmd_status, "show the file history"),
    ):
        command = sub.add_parser(name, help=text)
        database_options(command)
        command.set_defaults(func=func)

    signals = sub.add_parser("signals", help="refresh the drug-event statistics (PRR, ROR, IC) and print the top pairs")
    signals.add_argument("--drug", help="only this drug (substance or product name, compared normalized)")
    signals.add_argument("--top", type=int, default=20, help="rows to print (default: 20)")
    signals.add_argument("--drug-roles", help="G.k.1 roles counted, comma-separated (default: 1,3: suspect and interacting)")
    database_options(signals)
    signals.set_defaults(func=cmd_signals)

    meddra = sub.add_parser("meddra", help="MedDRA terminology (bring your own licensed release)")
    meddra_load = meddra.add_subparsers(dest="meddra_command", required=True).add_parser(
        "load", help="load a MedDRA ASCII release (llt.asc, pt.asc, hlt.asc, hlgt.asc, soc.asc, mdhier.asc) into meddra_* tables"
    )
    meddra_load.add_argument("directory", help="the release's folder (or its MedAscii folder)")
    meddra_load.add_argument("--version", help="the MedDRA version, e.g. 27.1 (default: read from meddra_release.asc)")
    database_options(meddra_load)
    meddra_load.set_defaults(func=cmd_meddra_load)

    validate = sub.add_parser("validate", help="validate files against an XML schema (XSD), streaming")
    validate.add_argument("--schema", required=True, help="the XSD file (e.g. the ICH E2B(R3) MCCI_IN200100UV01.xsd)")
    validate.add_argument("source", help="folder, glob, file or s3://bucket/prefix/")
    validate.set_defaults(func=cmd_validate)

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
    except BrokenPipeError:
        # The reader went away (`eudravigloader status | head`): stop quietly, and let nothing more reach the pipe
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (SettingsError, E2BError, MeddraReleaseError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    except (SQLAlchemyError, OSError, UnknownLoaderError, *_s3_errors()) as exc:
        # One clear line, never a traceback; SQLAlchemy errors do not carry the password
        where = "S3: " if type(exc).__module__.startswith(("botocore", "boto3")) else ""
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        sys.stderr.write(f"error: {where}{type(exc).__name__}: {first_line}\n")
        return 1


def _s3_errors() -> tuple[type[Exception], ...]:
    """botocore's errors (no bucket, no credentials, no endpoint), when it is installed."""
    try:
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        return ()
    return (BotoCoreError, ClientError)


if __name__ == "__main__":
    sys.exit(main())

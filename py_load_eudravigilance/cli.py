"""``eudravigloader``: load E2B(R3) files, manage the database schema, print the data dictionary."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from datetime import date
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from py_load_eudravigilance.environment import CONFIG_ENV, DEFAULT_DSN, DSN_ENV, SOURCE_ENV

# Each command imports what it needs when it runs: `--version` and `--help` start at once, and `run`
# never pays for pandas (the read-back of checks) or the XML schema tools
if TYPE_CHECKING:
    from sqlalchemy import CompoundSelect, Table

    from loaders.contract import Loader, LoadOutcome
    from py_load_eudravigilance.pipeline import RunSummary
    from py_load_eudravigilance.settings import Settings
    from py_load_eudravigilance.signals import StatisticsSummary


class DatabaseNotReady(Exception):
    """A command that reads found no database, or one never initialised; the message says how to create it."""


def settings_for(args: argparse.Namespace) -> Settings:
    """Settings with this command's options on top of the environment and the configuration file."""
    from py_load_eudravigilance.settings import load_settings

    overrides: dict[str, object] = {"database": {"dsn": getattr(args, "dsn", None)}}
    for name in ("mode", "workers"):
        overrides[name] = getattr(args, name, None)
    overrides["source_uri"] = getattr(args, "source", None)
    overrides["signals"] = {"drug_roles": getattr(args, "drug_roles", None), "meddra_version": getattr(args, "meddra_version", None)}
    return load_settings(overrides, getattr(args, "config", None))


def configured_loader(settings: Settings) -> Loader:
    """The loader of the configured database, in its configured schema if one is set."""
    from loaders.registry import loader_for

    return loader_for(settings.database.dsn, settings.database.db_schema)


def database_to_read(settings: Settings, *, initialised: bool = True) -> Loader:
    """The configured database's loader, for a command that reads it: nothing is created on the way.

    SQLite creates a missing file when it first connects, so a mistyped path is refused before any
    connection; a database without the file history was never initialised (when ``initialised``).
    """
    from sqlalchemy import create_engine, inspect

    from py_load_eudravigilance.schema import FILE_HISTORY_TABLE

    def not_ready(problem: str | None = None) -> DatabaseNotReady:
        """``problem`` (else: the database has none of the tables), and how to make the database ready."""
        from py_load_eudravigilance.pipeline import redact_dsn

        shown = redact_dsn(settings.database.dsn)
        return DatabaseNotReady(f"{problem or f'{shown} has no eudravigloader tables'}: run `eudravigloader init-db --dsn {shown}` first")

    loader = configured_loader(settings)
    url = loader.engine.url
    path = url.database if url.get_backend_name() == "sqlite" else None
    if path and path != ":memory:" and not path.startswith("file:") and not Path(path).exists():
        raise not_ready(f"no database at {path}")
    if initialised:
        # A plain engine on the same URL: the loader's session settings would write (SQLite's WAL mode does)
        probe = create_engine(url)
        try:
            found = inspect(probe).has_table(FILE_HISTORY_TABLE, schema=settings.database.db_schema)
        finally:
            probe.dispose()
        if not found:
            raise not_ready()
    return loader


def table_of(settings: Settings, name: str) -> Table:
    """One table of the data dictionary, in the configured schema (without the read-back module, which needs pandas)."""
    from py_load_eudravigilance.schema import schema_table

    return schema_table(name, settings.database.db_schema)


def cmd_dictionary(args: argparse.Namespace) -> int:
    from py_load_eudravigilance.mapping.catalog import all_columns
    from py_load_eudravigilance.mapping.dictionary import element_source

    columns = all_columns()

    def source(element: str) -> str:  # ICH, FDA or EU; technical columns have no element
        return element_source(element) if element else ""

    if args.format == "json":
        json.dump(
            [
                {
                    "table": c.table,
                    "column": c.name,
                    "element": c.element,
                    "source": source(c.element),
                    "name": c.description,
                    "type": c.type.value,
                }
                for c in columns
            ],
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
            sys.stdout.write(f"\n### `{c.table}`\n\n| column | element | source | name | type |\n|---|---|---|---|---|\n")
        name = c.description.replace("|", "\\|")
        sys.stdout.write(f"| `{c.name}` | {c.element} | {source(c.element)} | {name} | {c.type.value} |\n")
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
    from loaders.registry import UnknownLoaderError
    from py_load_eudravigilance.pipeline import redact_dsn, run_load
    from py_load_eudravigilance.sources import parse_location

    settings = settings_for(args)
    dsn = settings.database.dsn
    if not settings.source_uri:
        sys.stderr.write(f"error: no SOURCE given, {SOURCE_ENV} is not set and the configuration has no source_uri\n")
        return 1
    started = time.perf_counter()
    interactive = sys.stderr.isatty()
    try:
        location = parse_location(settings.source_uri)
        # Before the load creates the database: a mistyped folder leaves nothing behind
        if not location.is_s3 and not Path(location.root).exists():
            raise FileNotFoundError(f"source not found: {location.uri}")
        summary = run_load(
            location,
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
    from loaders.contract import COMPLETED, FAILED, PARTIAL
    from py_load_eudravigilance.mapping.unmapped import REPORTED_PATHS
    from py_load_eudravigilance.sources import printable

    totals = summary.totals()
    lines = [
        f"files: {summary.files_found} found, {summary.files_skipped} skipped (already loaded), "
        + ", ".join(f"{len(summary.with_status(status))} {status}" for status in (COMPLETED, PARTIAL, FAILED))
        + (f"; mapped by the {summary.mapper} mapper" if summary.mapper else ""),
        f"cases: {totals['cases_inserted']} inserted, {totals['cases_updated']} updated, "
        f"{totals['cases_skipped_older']} skipped as older, {totals['cases_nullified']} nullified, "
        f"{totals['versions_after_nullification']} newer versions of nullified cases not applied; "
        f"messages rejected: {totals['messages_rejected']}",
    ]
    unmapped = [o for o in summary.outcomes if o.unmapped_values]
    if unmapped:
        # Which content this loader does not map: each distinct path once (etl_file_history has them per file)
        paths = list(dict.fromkeys(path for o in unmapped for path in o.unmapped_paths))
        lines.append(
            f"unmapped values (no column holds them; the audit XML keeps them): {totals['unmapped_values']} in {len(unmapped)} files, at"
        )
        lines.extend(f"  {path}" for path in paths[:REPORTED_PATHS])
        if len(paths) > REPORTED_PATHS:
            lines.append(f"  ... and {len(paths) - REPORTED_PATHS} more paths (etl_file_history.unmapped_paths lists them per file)")
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
    return [printable(line) for line in lines]  # names and values from the files: one line each, whatever they hold


def cmd_init_db(args: argparse.Namespace) -> int:
    from py_load_eudravigilance.pipeline import redact_dsn

    settings = settings_for(args)
    configured_loader(settings).create_all_tables()
    print(f"schema ready in {redact_dsn(settings.database.dsn)}")
    return 0


def cmd_validate_db_schema(args: argparse.Namespace) -> int:
    report = database_to_read(settings_for(args), initialised=False).schema_report()
    for label, items in (
        ("missing table", report.missing_tables),
        ("missing column", report.missing_columns),
        ("mistyped column", report.mistyped_columns),
        ("missing view", report.missing_views),
        ("outdated view", report.outdated_views),
        ("missing index", report.missing_indexes),
        ("extra column", report.extra_columns),
    ):
        for item in items:
            print(f"{label}: {item}")
    print("schema is valid" if report.ok else "schema is NOT valid (`eudravigloader init-db` creates what is missing)")
    return 0 if report.ok else 1


def cmd_meddra_load(args: argparse.Namespace) -> int:
    from loaders.upkeep import load_meddra
    from py_load_eudravigilance.meddra import read_release
    from py_load_eudravigilance.pipeline import redact_dsn

    settings = settings_for(args)
    release = read_release(Path(args.directory), args.version, args.encoding)
    loader = configured_loader(settings)
    loader.create_all_tables()
    loaded = load_meddra(loader.engine, release, settings.database.db_schema)
    counts = ", ".join(f"{table.removeprefix('meddra_')}={rows}" for table, rows in loaded.items())
    print(f"MedDRA {release.version} loaded into {redact_dsn(settings.database.dsn)}: {counts}")
    return 0


def counted_names(settings: Settings, drug: str) -> CompoundSelect:
    """The names the statistics may count a drug under that a user names by its active substance or by its product:
    the name itself (a substance, or the product of a drug that names none), and the substances of the drugs reported
    under that product name; normalized as the statistics normalize theirs."""
    from sqlalchemy import and_, literal, select, union

    from py_load_eudravigilance.mapping.catalog import CASE_KEY
    from py_load_eudravigilance.signals import drug_name

    drugs, substances = table_of(settings, "drugs"), table_of(settings, "drug_substances")
    asked = drug_name(literal(drug))
    of_product = (
        select(drug_name(substances.c.substance_name))
        .select_from(drugs.join(substances, and_(substances.c[CASE_KEY] == drugs.c[CASE_KEY], substances.c.drug_seq == drugs.c.drug_seq)))
        .where(drug_name(drugs.c.medicinal_product) == asked)
    )
    return union(select(asked), of_product)


def events_of(summary: StatisticsSummary) -> str:
    """What the statistics' events are, as the output says it."""
    if summary.meddra_version is None:
        return "events: the reported MedDRA codes, no MedDRA release loaded"
    return f"events: PTs of MedDRA {summary.meddra_version}"


def cmd_signals(args: argparse.Namespace) -> int:
    from sqlalchemy.sql import Select

    from loaders.upkeep import refresh_drug_event_statistics
    from py_load_eudravigilance.pipeline import redact_dsn
    from py_load_eudravigilance.signal_rules import EB05, EB05_THRESHOLD
    from py_load_eudravigilance.signals import STATISTICS_TABLE, markdown_table, summary_query, top_pairs, with_ebgm
    from py_load_eudravigilance.subgroups import check_screen, screen, screen_columns

    check_screen(args.drug, args.subgroup or [], args.since)
    settings = settings_for(args)
    loader = database_to_read(settings)  # a mistyped path is an error, not an empty database with 0 pairs
    loader.create_all_tables()  # the statistics table, in a database initialised before it existed
    signal_settings = settings.signals
    summary = refresh_drug_event_statistics(
        loader.engine, signal_settings.drug_roles, args.rebuild, settings.database.db_schema, meddra_version=signal_settings.meddra_version
    )
    statistics = table_of(settings, STATISTICS_TABLE)

    def pairs(top: int | None, rule: str | None) -> Select:  # top_pairs, of the drug asked for by substance or product
        query = top_pairs(statistics, None, None, rule)
        if args.drug:
            query = query.where(statistics.c.drug.in_(counted_names(settings, args.drug)))
        return query if top is None else query.limit(top)

    with loader.engine.connect() as conn:
        # What an analyst asks this command for; both read the whole view (the refresh itself did not)
        signals = conn.execute(summary_query(statistics)).one()[1]
        if args.ebgm or args.rule == EB05:
            # EBGM's prior is fitted over every pair: all of them are read, then shown by EB05
            scored, fit = with_ebgm([dict(row) for row in conn.execute(top_pairs(statistics, None)).mappings()])
            flagged = None if args.rule == EB05 else args.rule
            wanted = {(row.drug, row.event_code) for row in conn.execute(pairs(None, flagged))}
            shown = [
                row
                for row in scored
                if (row["drug"], row["event_code"]) in wanted and (args.rule != EB05 or row["eb05"] >= EB05_THRESHOLD)
            ]
            rows = sorted(shown, key=lambda row: -row["eb05"])[: args.top]
        else:
            fit = None
            rows = conn.execute(pairs(args.top, args.rule)).mappings().all()
        if args.subgroup or args.since:
            rows = screen(conn, loader.table, rows, args.subgroup or [], args.since)
    how = "rebuilt in full" if summary.rebuilt else f"{summary.cases_recounted} cases recounted, {summary.changed_pairs} pairs changed"
    print(
        f"drug_event_statistics refreshed in {redact_dsn(settings.database.dsn)} ({how}): {summary.pairs} drug-event pairs, "
        f"{signals} signals among {summary.cases} cases (drug roles {', '.join(settings.signals.drug_roles)}; {events_of(summary)})"
    )
    if fit is not None:
        prior = fit.prior
        print(
            f"EBGM prior (two-gamma mixture, maximum likelihood over {fit.pairs} pairs): alpha1={prior.alpha1:.4g} "
            f"beta1={prior.beta1:.4g} alpha2={prior.alpha2:.4g} beta2={prior.beta2:.4g} p={prior.p:.4g}"
        )
    if args.since:
        print(f"a_new: cases whose most recent information (C.1.5) is from {args.since.isoformat()} on")
    if rows:
        print(markdown_table(rows, screen_columns(args.subgroup or [], args.since)))
    elif args.drug:
        print(f"no pairs for drug {args.drug.strip()!r}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from py_load_eudravigilance.schema import FILE_HISTORY_TABLE
    from py_load_eudravigilance.sources import printable

    settings = settings_for(args)
    engine = database_to_read(settings).engine
    history = table_of(settings, FILE_HISTORY_TABLE)
    with engine.connect() as conn:
        rows = conn.execute(select(history).order_by(history.c.finished_at)).mappings().all()
    for row in rows:
        finished = f"{row['finished_at']:%Y-%m-%d %H:%M:%S}" if row["finished_at"] else "-"
        duration = f"{row['duration_seconds']:.1f}s" if row["duration_seconds"] is not None else "-"
        print(
            printable(
                f"{row['status']:<9} {finished} {duration:>7}  {row['file_name']}  messages={row['messages_total']} "
                f"inserted={row['cases_inserted']} updated={row['cases_updated']} skipped={row['cases_skipped_older']} "
                f"nullified={row['cases_nullified']} after_nullification={row['versions_after_nullification']} "
                f"rejected={row['messages_rejected']}" + (f"  error={row['error']}" if row["error"] else "")
            )
        )
    if not rows:
        print("no files loaded yet")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from py_load_eudravigilance.parsing.xsd import load_schema, validate_file
    from py_load_eudravigilance.sources import list_objects, local_copy, object_name, parse_location, printable

    schema = load_schema(Path(args.schema))
    location = parse_location(args.source)
    invalid = 0
    objects = list_objects(location)
    for obj in objects:
        with local_copy(location, obj.key) as path:
            result = validate_file(path, schema, object_name(location, obj.key))
        if result.valid:
            print(printable(f"valid: {result.file_name}"))
        else:
            invalid += 1
            print(printable(f"invalid: {result.file_name}: {result.error}"))
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


def positive_int(text: str) -> int:
    number = int(text)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {number}")
    return number


# Rows a report prints at most: beyond, no terminal is served, and databases' LIMIT overflows (64 bits)
MAX_REPORT_ROWS = 1_000_000


def report_rows(text: str) -> int:
    number = positive_int(text)
    if number > MAX_REPORT_ROWS:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_REPORT_ROWS:,}, not {number}")
    return number


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
    signals.add_argument(
        "--drug",
        help="only this drug, named by an active substance (G.k.2.3.r.1, e.g. PARACETAMOL) or a product (G.k.2.2): the pairs "
        "are counted per substance (per product for drugs that name none), so a product shows its substances' pairs; "
        "compared upper-cased with blanks trimmed",
    )
    signals.add_argument("--top", type=report_rows, default=20, help="rows to print (default: 20)")
    signals.add_argument("--drug-roles", help="G.k.1 roles counted, comma-separated (default: 1,3: suspect and interacting)")
    signals.add_argument(
        "--rebuild", action="store_true", help="recount every case (default: only the cases loaded since the last refresh)"
    )
    signals.add_argument(
        "--rule",
        choices=("evans_prr", "ic025", "ema_sdr", "eb05"),
        help="only the pairs meeting this screening rule (docs/signal-rules.md); eb05 computes EBGM",
    )
    signals.add_argument(
        "--subgroup",
        action="append",
        metavar="NAME",
        help="with --drug: counts, ROR, EMA's SDR rule and the relative ROR against the other cases within this subgroup: "
        "paediatric, geriatric, female, male, eea, north_america, japan, asia, rest_of_world (repeatable; docs/signals.md)",
    )
    signals.add_argument(
        "--since",
        type=date.fromisoformat,
        metavar="YYYY-MM-DD",
        help="with --drug: a_new, the cases of each pair whose most recent information (C.1.5) is from this day on",
    )
    signals.add_argument("--meddra-version", help="count events as PTs of this loaded MedDRA version (default: the latest loaded)")
    signals.add_argument("--ebgm", action="store_true", help="add EBGM, EB05 and EB95 (gamma-Poisson shrinker over every pair)")
    database_options(signals)
    signals.set_defaults(func=cmd_signals)

    meddra = sub.add_parser("meddra", help="MedDRA terminology (bring your own licensed release)")
    meddra_load = meddra.add_subparsers(dest="meddra_command", required=True).add_parser(
        "load", help="load a MedDRA ASCII release (llt.asc, pt.asc, hlt.asc, hlgt.asc, soc.asc, mdhier.asc) into meddra_* tables"
    )
    meddra_load.add_argument("directory", help="the release's folder (or its MedAscii folder)")
    meddra_load.add_argument("--version", help="the MedDRA version, e.g. 27.1 (default: read from meddra_release.asc)")
    meddra_load.add_argument("--encoding", help="the files' encoding when it is not UTF-8, e.g. latin-1, cp1252, shift_jis")
    database_options(meddra_load)
    meddra_load.set_defaults(func=cmd_meddra_load)

    validate = sub.add_parser("validate", help="validate files against an XML schema (XSD), streaming")
    validate.add_argument("--schema", required=True, help="the XSD file (e.g. the ICH E2B(R3) MCCI_IN200100UV01.xsd)")
    validate.add_argument("source", help="folder, glob, file or s3://bucket/prefix/")
    validate.set_defaults(func=cmd_validate)

    dictionary = sub.add_parser("dictionary", help="print the data dictionary")
    dictionary.add_argument(
        "--format", choices=("json", "markdown"), default="markdown", help="markdown (default, as in docs/data-dictionary.md) or json"
    )
    dictionary.set_defaults(func=cmd_dictionary)

    generate = sub.add_parser(
        "generate", help="write synthetic E2B(R3) batch files (later files hold follow-ups and nullifications of earlier cases)"
    )
    generate.add_argument("output", help="folder to write batch-SEED-NNNN.xml files into (created if missing)")
    generate.add_argument("--files", type=positive_int, default=3, help="batch files to write (default: 3)")
    generate.add_argument("--cases", type=positive_int, default=20, help="messages per file (default: 20)")
    generate.add_argument("--seed", type=int, default=7, help="random seed: the same seed writes the same files (default: 7)")
    generate.set_defaults(func=cmd_generate)
    return parser


# Errors that end a command in one line, never a traceback: the project's own, whose message says it all...
STATED_ERRORS = (
    "py_load_eudravigilance.settings:SettingsError",
    "py_load_eudravigilance.errors:E2BError",
    "py_load_eudravigilance.meddra:MeddraReleaseError",
    "py_load_eudravigilance.signals:MeddraVersionNotLoaded",
    "py_load_eudravigilance.subgroups:ScreenRequestError",
)
# ...and the others, shown with their type (SQLAlchemy's errors do not carry the password; botocore's:
# no bucket, no credentials, no endpoint)
TYPED_ERRORS = (
    "sqlalchemy.exc:SQLAlchemyError",
    "loaders.registry:UnknownLoaderError",
    "botocore.exceptions:BotoCoreError",
    "botocore.exceptions:ClientError",
)


def imported_classes(names: Sequence[str]) -> tuple[type[BaseException], ...]:
    """The ``module:Class`` of ``names`` whose module this process imported: a command that never imported a
    module cannot have raised its errors, and the commands import only what they need."""
    return tuple(getattr(sys.modules[module], name) for module, _, name in (n.partition(":") for n in names) if module in sys.modules)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except BrokenPipeError:
        # The reader went away (`eudravigloader status | head`): stop quietly, and let nothing more reach the pipe
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as exc:
        from py_load_eudravigilance.sources import printable  # a file name in the message stays on its line

        if isinstance(exc, (DatabaseNotReady, *imported_classes(STATED_ERRORS))):
            sys.stderr.write(f"error: {printable(str(exc))}\n")
        elif isinstance(exc, (OSError, *imported_classes(TYPED_ERRORS))):
            where = "S3: " if type(exc).__module__.startswith(("botocore", "boto3")) else ""
            first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            sys.stderr.write(f"error: {where}{type(exc).__name__}: {printable(first_line)}\n")
        else:
            raise
        return 1


if __name__ == "__main__":
    sys.exit(main())

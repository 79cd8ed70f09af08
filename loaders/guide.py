"""The published guide's ``LoaderInterface``, kept as thin adapters around the one contract (``contract.Loader``).

Two directions:

* :class:`GuideLoader`: a plugin written exactly as the guide says, driven through the guide's own
  methods, with the built-in loaders' whole behaviour (version decisions, audit log, quarantine,
  history, delta runs, every CLI command). Per load transaction on the plugin's engine it calls
  ``prepare_load(conn, table, load_mode)`` per case table with rows to load (``'delta'``), and for
  every case table first in a ``'full'`` reload (``'full'``: the plugin empties it);
  ``bulk_load_native(conn, stream, staging_table, columns)`` with the winning versions' rows as
  COPY text (``docs/loader-plugins.md``), into the staging table ``prepare_load`` returned; and
  ``handle_upsert(conn, staging_table, table, primary_keys, None)`` (the replaced cases' rows are
  already deleted, so no version key is needed); ``create_all_tables()``,
  ``get_completed_file_hashes()`` and ``validate_schema(definition)`` where the commands need them.
  ``load_normalized_data`` and ``load_audit_data`` are not called: the adapter does their work
  itself, so that a file's rows, its audit log entries and its history row commit in one
  transaction (the guide's ``load_audit_data`` has no connection to share one). Reading versions,
  deleting replaced cases and writing the bookkeeping tables use SQLAlchemy Core on the plugin's
  ``engine``.
* :class:`GuideMethods`: every guide method over a built-in loader, for a plugin that delegates to
  one (``GuideMethods(SQLiteLoader(...))``).
"""

from __future__ import annotations

import tempfile
from collections.abc import Collection
from io import BytesIO, IOBase
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Column, MetaData, Table, create_engine, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.sql.type_api import TypeEngine

from loaders.base import SQLAlchemyLoader, schema_definition
from loaders.contract import LoadMode, SchemaReport
from loaders.dialect import Dialect, execute_inserts, python_rows, text_rows
from loaders.interface import LoaderInterface
from py_load_eudravigilance.mapping.catalog import CASE_KEY
from py_load_eudravigilance.planning import Capabilities
from py_load_eudravigilance.schema import AUDIT_TABLE, CASE_TABLE_NAMES, MASTER_TABLE, MESSAGE_POSITION, build_metadata
from py_load_eudravigilance.staging import StagedFile
from py_load_eudravigilance.staging.copybinary import decode_rows, encode_row
from py_load_eudravigilance.staging.copytext import encode_row as encode_text_row
from py_load_eudravigilance.staging.layout import INDEXED_TABLES, STAGED_COLUMNS, STAGED_FAMILIES, MessageKey, StagedMessages, table_file


class PluginWithoutEngine(RuntimeError):
    """The plugin's database cannot be reached with SQLAlchemy."""


def as_copy_text(data: bytes, table: str) -> bytes:
    """Staged binary tuples as COPY text lines: the portable form a guide plugin's bulk path receives."""
    return b"".join(encode_text_row(values) for values in decode_rows(data, STAGED_FAMILIES[table]))


class GuideDialect(Dialect):
    """The case tables' rows go through the plugin's guide methods; the rest is the portable behaviour."""

    # The guide's contract is one file per load
    capabilities = Capabilities(loads_groups=False, loads_parts_while_staging=False)

    def __init__(self, plugin: LoaderInterface) -> None:
        self.plugin = plugin

    def insert_rows(self, conn: Connection, table: Table, stream: IO[bytes], columns: tuple[str, ...]) -> int:
        if table.name not in CASE_TABLE_NAMES:
            return super().insert_rows(conn, table, stream, columns)  # bookkeeping tables: SQLAlchemy Core
        staging = self.plugin.prepare_load(conn, table.name, "delta")
        text_rows_ = as_copy_text(stream.read(), table.name)
        self.plugin.bulk_load_native(conn, BytesIO(text_rows_), staging, list(columns))  # type: ignore[arg-type]
        self.plugin.handle_upsert(conn, staging, table.name, [c.name for c in table.primary_key.columns], None)
        # The replaced cases' rows are deleted before, so every staged row is new to the table
        return text_rows_.count(b"\n")

    def empty_case_tables(self, conn: Connection, tables: list[Table]) -> None:
        for table in tables:
            self.plugin.prepare_load(conn, table.name, "full")
        super().empty_case_tables(conn, tables)


class GuideLoader(SQLAlchemyLoader):
    """The load contract for a plugin written to the guide."""

    def __init__(self, plugin: LoaderInterface, dsn: Any, schema: str | None = None) -> None:
        self.plugin = plugin
        self.dialect = GuideDialect(plugin)
        self.schema = schema
        self.metadata: MetaData = build_metadata(schema)
        self._engine: Engine | None = getattr(plugin, "engine", None) if isinstance(getattr(plugin, "engine", None), Engine) else None
        self._dsn = dsn

    @property
    def engine(self) -> Engine:  # type: ignore[override]
        if self._engine is None:
            try:
                self._engine = self._dsn if isinstance(self._dsn, Engine) else create_engine(self._dsn)
            except (ArgumentError, NoSuchModuleError) as exc:
                raise PluginWithoutEngine(
                    f"the {type(self.plugin).__name__} plugin keeps no SQLAlchemy engine (`self.engine`) and none can be made "
                    f"from its DSN ({type(exc).__name__}); the loader needs one to read versions and write the history"
                ) from None
        return self._engine

    def create_all_tables(self) -> None:
        # The plugin creates its tables its way; the rest of the schema (indexes, code lists, views, MedDRA tables) is
        # portable SQLAlchemy Core, created where missing
        self.plugin.create_all_tables()
        super().create_all_tables()

    def get_completed_file_hashes(self, sizes: Collection[int] | None = None) -> set[str]:
        return set(self.plugin.get_completed_file_hashes())  # the guide's method knows no sizes: every loaded hash

    def schema_report(self, definition: dict[str, dict[str, str]] | None = None) -> SchemaReport:
        expected = definition or schema_definition(self.metadata)
        report = super().schema_report(expected)
        if not self.plugin.validate_schema(expected) and report.ok:
            report.missing_tables.append(f"(the {type(self.plugin).__name__} plugin's validate_schema says the schema is incomplete)")
        return report


class GuideMethods(LoaderInterface):
    """The guide's methods over a built-in loader, for a plugin that delegates to one: staging tables are temporary
    tables, bulk loads the dialect's own, and the two whole-file methods go through the loader's one load."""

    def __init__(self, dsn_or_engine: Any) -> None:
        self.loader: SQLAlchemyLoader = dsn_or_engine if isinstance(dsn_or_engine, SQLAlchemyLoader) else _built_in(dsn_or_engine)
        self.engine = self.loader.engine
        self._staging_tables: dict[str, Table] = {}

    def validate_schema(self, schema_definition: dict[str, Any]) -> bool:
        return self.loader.schema_report(schema_definition).ok  # type: ignore[call-arg]

    def create_all_tables(self) -> None:
        self.loader.create_all_tables()

    def get_completed_file_hashes(self) -> set[str]:
        return self.loader.get_completed_file_hashes()

    def staging_table(self, target_table: str) -> Table:
        if target_table not in self._staging_tables:
            target = self.loader.table(target_table)
            columns = [Column(name, target.c[name].type) for name in STAGED_COLUMNS[target_table]]
            self._staging_tables[target_table] = Table(f"stg_{target_table}", MetaData(), *columns, prefixes=["TEMPORARY"])
        return self._staging_tables[target_table]

    def prepare_load(self, conn: Connection, target_table: str, load_mode: str) -> str:
        """Empty ``target_table`` in 'full' mode; create an empty staging table for it and return its name."""
        if load_mode == LoadMode.FULL:
            conn.execute(self.loader.table(target_table).delete())
        staging = self.staging_table(target_table)
        staging.drop(conn, checkfirst=True)
        staging.create(conn)
        return staging.name

    def _named_table(self, name: str) -> Table:
        """A staging table :meth:`prepare_load` created, or a target table."""
        for staging in self._staging_tables.values():
            if staging.name == name:
                return staging
        return self.loader.table(name)

    def bulk_load_native(self, conn: Connection, data_stream: IOBase, target_table: str, columns: list[str]) -> None:
        """COPY text rows into ``target_table`` (a staging table from :meth:`prepare_load`, or a target)."""
        self.loader.dialect.insert_text(conn, self._named_table(target_table), data_stream, tuple(columns))

    def handle_upsert(
        self, conn: Connection, staging_table: str, target_table: str, primary_keys: list[str], version_key: str | None
    ) -> None:
        """Merge ``staging_table`` into ``target_table``: target rows whose ``primary_keys`` match a staged row are
        replaced by the staged rows; with ``version_key``, only by staged rows whose version is greater."""
        q = self.loader.quote
        staging, target = q(staging_table), self.loader.qualified(target_table)
        matches = " AND ".join(f"{target}.{q(k)} = s.{q(k)}" for k in primary_keys)
        newer = f" AND s.{q(version_key)} > {target}.{q(version_key)}" if version_key else ""
        conn.execute(text(f"DELETE FROM {target} WHERE EXISTS (SELECT 1 FROM {staging} s WHERE {matches}{newer})"))
        columns = STAGED_COLUMNS[target_table]
        listed, selected = ", ".join(q(c) for c in columns), ", ".join(f"s.{q(c)}" for c in columns)
        absent = f"NOT EXISTS (SELECT 1 FROM {target} WHERE {matches})"
        conn.execute(text(f"INSERT INTO {target} ({listed}) SELECT {selected} FROM {staging} s WHERE {absent}"))

    def load_normalized_data(
        self, buffers: dict[str, IOBase], row_counts: dict[str, int], load_mode: str, file_path: str, file_hash: str
    ) -> None:
        """One file's staged streams (every staged table, the audit log's included) loaded in one transaction."""
        with tempfile.TemporaryDirectory(prefix="eudravig-load-") as scratch:
            batch = Path(scratch)
            types = {name: {c.name: c.type for c in self.loader.table(name).columns} for name in buffers}
            index = index_from_streams(buffers, batch, types)
            source = Path(file_path)
            # Its size keys its history row for later delta runs (unknown when the path is not a local file)
            size = source.stat().st_size if source.is_file() else None
            staged = StagedFile(file_path, file_hash, 0, dict(row_counts), messages_total=len(index.keys), file_size_bytes=size)
            self.loader.load([batch], LoadMode(load_mode), [staged])

    def load_audit_data(self, buffer: IOBase, row_count: int, load_mode: str, file_path: str, file_hash: str) -> None:
        """Append one file's audit rows (COPY text), in a transaction of their own; versions already logged are left out."""
        audit, columns = self.loader.table(AUDIT_TABLE), STAGED_COLUMNS[AUDIT_TABLE]
        rows = python_rows(text_rows(buffer, columns, {c.name: c.type for c in audit.columns}), columns)
        with self.engine.begin() as conn:
            logged = self.loader.logged_positions(conn, [file_hash])[file_hash]
            appended = execute_inserts(conn, audit, (row for row in rows if row[MESSAGE_POSITION] not in logged))
            self.loader.write_row_counts(conn, {AUDIT_TABLE: appended})


def _built_in(dsn_or_engine: Any) -> SQLAlchemyLoader:
    from loaders.registry import get_loader

    loader = get_loader(dsn_or_engine)
    if not isinstance(loader, SQLAlchemyLoader):
        raise TypeError(f"{dsn_or_engine!r} names no built-in loader")
    return loader


def index_from_streams(buffers: dict[str, IOBase], directory: Path, types: dict[str, dict[str, TypeEngine]]) -> StagedMessages:
    """Write one file's staged COPY text streams (every table's, the audit log's included) into ``directory`` as a
    binary batch, and rebuild its index from the audit rows: each names its case version and its rows per table."""
    rows: dict[str, list[list[Any]]] = {}
    for table, stream in buffers.items():
        rows[table] = list(text_rows(stream, STAGED_COLUMNS[table], types[table]))  # type: ignore[arg-type]
        with table_file(directory, table).open("wb") as sink:
            for values in rows[table]:
                sink.write(encode_row(values, STAGED_FAMILIES[table]))
    index = StagedMessages()
    sizes = {table: [len(encode_row(values, STAGED_FAMILIES[table])) for values in rows.get(table, [])] for table in INDEXED_TABLES}
    cursors, offsets = dict.fromkeys(INDEXED_TABLES, 0), dict.fromkeys(INDEXED_TABLES, 0)
    files: dict[tuple[str, str], int] = {}
    # The master row's version_count (staged NULL) starts after the row's field count and the fields before it
    count_field = STAGED_COLUMNS[MASTER_TABLE].index("version_count")
    for values in rows.get(AUDIT_TABLE, []):
        row = dict(zip(STAGED_COLUMNS[AUDIT_TABLE], values, strict=True))
        ordinal = files.setdefault((row["file_name"], row["file_sha256"]), len(files))
        counts = {**(row["row_counts"] or {}), AUDIT_TABLE: 1}
        master = rows.get(MASTER_TABLE, [])[cursors[MASTER_TABLE] : cursors[MASTER_TABLE] + counts.get(MASTER_TABLE, 0)]
        prefix = encode_row(master[0][:count_field], STAGED_FAMILIES[MASTER_TABLE][:count_field]) if master else None
        index.version_count_at.append(offsets[MASTER_TABLE] + len(prefix) if prefix is not None else -1)  # (no master row: no count)
        for table in INDEXED_TABLES:
            taken = sizes[table][cursors[table] : cursors[table] + counts.get(table, 0)]
            cursors[table] += len(taken)
            offsets[table] += sum(taken)
        created = row["message_creation_time_utc"]
        index.keys.append(
            MessageKey(
                ordinal,
                row[MESSAGE_POSITION],
                row[CASE_KEY],
                row["most_recent_info_date_utc"].isoformat(),
                created.isoformat() if created else None,
                bool(row["is_nullification"]),
            )
        )
        index.bounds.extend(offsets[table] for table in INDEXED_TABLES)
    index.files = list(files)
    index.save(directory)
    return index

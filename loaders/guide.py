"""A plugin written exactly as the published guide says, driven through the guide's own methods.

The pipeline depends on :class:`~loaders.contract.Loader` only. A guide-style plugin implements
:class:`~loaders.interface.LoaderInterface`; this adapter gives it the built-in loaders' whole
behaviour (version decisions, audit log, quarantine, history, delta runs, every CLI command) and
calls, per load transaction on the plugin's engine:

* ``prepare_load(conn, table, load_mode)``: per case table with rows to load (``'delta'``), and for
  every case table first in a ``'full'`` reload (``'full'``: the plugin empties it);
* ``bulk_load_native(conn, stream, staging_table, columns)``: the winning versions' rows, as staged
  COPY text (``docs/loader-plugins.md``), into the staging table ``prepare_load`` returned;
* ``handle_upsert(conn, staging_table, table, primary_keys, None)``: those rows into the table, keyed
  by its primary key (the replaced cases' rows are already deleted, so no version key is needed);
* ``create_all_tables()``, ``get_completed_file_hashes()`` and ``validate_schema(definition)`` where
  the commands need them.

``load_normalized_data`` and ``load_audit_data`` are not called: the adapter does their work itself,
so that a file's rows, its audit log entries and its history row commit in one transaction (the
guide's ``load_audit_data`` has no connection to share one). Reading versions, deleting replaced
cases and writing the bookkeeping tables use SQLAlchemy Core on the plugin's ``engine``.
"""

from __future__ import annotations

from io import BytesIO
from typing import IO, Any

from sqlalchemy import MetaData, Table, create_engine
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from loaders.base import SQLAlchemyLoader, as_copy_text, schema_definition
from loaders.contract import SchemaReport
from loaders.interface import LoaderInterface
from py_load_eudravigilance.planning import Capabilities
from py_load_eudravigilance.schema import CASE_TABLE_NAMES, build_metadata


class PluginWithoutEngine(RuntimeError):
    """The plugin's database cannot be reached with SQLAlchemy."""


class GuideLoader(SQLAlchemyLoader):
    # The guide's contract is one file per load
    capabilities = Capabilities(loads_groups=False, loads_parts_while_staging=False)

    def __init__(self, plugin: LoaderInterface, dsn: Any, schema: str | None = None) -> None:
        self.plugin = plugin
        self.schema = schema
        self.metadata: MetaData = build_metadata(schema)
        self._staging_tables: dict[str, Table] = {}
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

    def get_completed_file_hashes(self) -> set[str]:
        return set(self.plugin.get_completed_file_hashes())

    def schema_report(self, definition: dict[str, dict[str, str]] | None = None) -> SchemaReport:
        expected = definition or schema_definition(self.metadata)
        report = super().schema_report(expected)
        if not self.plugin.validate_schema(expected) and report.ok:
            report.missing_tables.append(f"(the {type(self.plugin).__name__} plugin's validate_schema says the schema is incomplete)")
        return report

    def insert_rows(self, conn: Connection, table: Table, stream: IO[bytes], columns: tuple[str, ...]) -> int:
        if table.name not in CASE_TABLE_NAMES:
            return super().insert_rows(conn, table, stream, columns)  # bookkeeping tables: SQLAlchemy Core
        staging = self.plugin.prepare_load(conn, table.name, "delta")
        text_rows = as_copy_text(stream.read(), table.name)  # the guide's portable form: COPY text, a row a line
        self.plugin.bulk_load_native(conn, BytesIO(text_rows), staging, list(columns))  # type: ignore[arg-type]
        self.plugin.handle_upsert(conn, staging, table.name, [c.name for c in table.primary_key.columns], None)
        # The replaced cases' rows are deleted before, so every staged row is new to the table
        return text_rows.count(b"\n")

    def empty_tables(self, conn: Connection) -> None:
        for name in CASE_TABLE_NAMES:
            self.plugin.prepare_load(conn, name, "full")
        super().empty_tables(conn)

"""A loader plugin written exactly as the published guide says is discovered and chosen."""

from __future__ import annotations

import subprocess
import sys
from io import BytesIO
from pathlib import Path

import pytest

from loaders.registry import backend_name, get_loader

PLUGIN_PYPROJECT = """
[tool.poetry]
name = "my-redshift-loader"
version = "0.1.0"
description = "Example loader plugin from the plugin guide"
authors = ["Example <example@example.org>"]
packages = [{ include = "my_redshift_loader" }]

[tool.poetry.plugins."py_load_eudravigilance.loaders"]
"redshift" = "my_redshift_loader.loader:RedshiftLoader"
"pvlite" = "my_redshift_loader.working:PvLiteLoader"

[build-system]
requires = ["poetry-core"]
build-backend = "poetry.core.masonry.api"
"""

# The skeleton of the guide, method for method
PLUGIN_LOADER = """
from py_load_eudravigilance.interfaces import LoaderInterface
from io import IOBase
from typing import Any, Dict, List
from sqlalchemy.engine import Connection

class RedshiftLoader(LoaderInterface):
    def __init__(self, dsn_or_engine: Any):
        self.dsn = dsn_or_engine

    def validate_schema(self, schema_definition: Dict[str, Any]) -> bool:
        raise NotImplementedError

    def prepare_load(self, conn: Connection, target_table: str, load_mode: str) -> str:
        raise NotImplementedError

    def bulk_load_native(self, conn: Connection, data_stream: IOBase, target_table: str, columns: List[str]) -> None:
        raise NotImplementedError

    def handle_upsert(self, conn: Connection, staging_table: str, target_table: str,
                      primary_keys: List[str], version_key: str | None) -> None:
        raise NotImplementedError

    def create_all_tables(self) -> None:
        raise NotImplementedError

    def get_completed_file_hashes(self) -> set[str]:
        raise NotImplementedError

    def load_normalized_data(self, buffers, row_counts, load_mode, file_path, file_hash) -> None:
        raise NotImplementedError

    def load_audit_data(self, buffer, row_count, load_mode, file_path, file_hash) -> None:
        raise NotImplementedError
"""


# A working plugin in the same package: the guide's methods, done by delegating to the guide's methods over the
# built-in SQLite loader, in a database named by its own URL scheme (pvlite:///path.db). It exposes ``engine``.
WORKING_LOADER = """
from typing import Any
from sqlalchemy import create_engine
from py_load_eudravigilance.interfaces import LoaderInterface
from loaders.guide import GuideMethods
from loaders.sqlite import SQLiteLoader

class PvLiteLoader(LoaderInterface):
    def __init__(self, dsn_or_engine: Any):
        self.inner = GuideMethods(SQLiteLoader(create_engine("sqlite:" + str(dsn_or_engine).split(":", 1)[1])))
        self.engine = self.inner.engine

    def validate_schema(self, schema_definition):
        return self.inner.validate_schema(schema_definition)

    def prepare_load(self, conn, target_table, load_mode):
        return self.inner.prepare_load(conn, target_table, load_mode)

    def bulk_load_native(self, conn, data_stream, target_table, columns):
        self.inner.bulk_load_native(conn, data_stream, target_table, columns)

    def handle_upsert(self, conn, staging_table, target_table, primary_keys, version_key):
        self.inner.handle_upsert(conn, staging_table, target_table, primary_keys, version_key)

    def create_all_tables(self):
        self.inner.create_all_tables()

    def get_completed_file_hashes(self):
        return self.inner.get_completed_file_hashes()

    def load_normalized_data(self, buffers, row_counts, load_mode, file_path, file_hash):
        self.inner.load_normalized_data(buffers, row_counts, load_mode, file_path, file_hash)

    def load_audit_data(self, buffer, row_count, load_mode, file_path, file_hash):
        self.inner.load_audit_data(buffer, row_count, load_mode, file_path, file_hash)
"""


@pytest.fixture(scope="session")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The plugin installed by pip into a folder of its own, once for the session (pip is the slow part)."""
    root = tmp_path_factory.mktemp("plugin")
    package = root / "plugin"
    (package / "my_redshift_loader").mkdir(parents=True)
    (package / "pyproject.toml").write_text(PLUGIN_PYPROJECT)
    (package / "my_redshift_loader" / "__init__.py").write_text("")
    (package / "my_redshift_loader" / "loader.py").write_text(PLUGIN_LOADER)
    (package / "my_redshift_loader" / "working.py").write_text(WORKING_LOADER)
    target = root / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-build-isolation", "--no-deps", "--target", str(target), str(package)],
        check=True,
    )
    return target


@pytest.fixture
def installed_plugin(plugin_site: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The plugin importable and its entry points found, for one test only."""
    monkeypatch.syspath_prepend(str(plugin_site))
    return plugin_site


def test_plugin_from_the_guide_is_chosen_by_dialect(installed_plugin: Path) -> None:
    from loaders.guide import GuideLoader

    loader = get_loader("redshift+psycopg2://analyst:secret@warehouse.example:5439/pv")
    assert isinstance(loader, GuideLoader)  # the pipeline's one contract, driving the guide's methods
    assert type(loader.plugin).__name__ == "RedshiftLoader"
    assert type(loader.plugin).__module__ == "my_redshift_loader.loader"


def test_backend_is_read_without_importing_the_driver() -> None:
    assert backend_name("redshift+psycopg2://u:p@h/db") == "redshift"
    assert backend_name("snowflake://u:p@account/db") == "snowflake"
    assert backend_name("postgresql://u@h/db") == "postgresql"


def test_a_plugin_loader_serves_the_dagster_io_manager_unchanged(installed_plugin: Path, tmp_path: Path, dagster_instance) -> None:  # type: ignore[no-untyped-def]
    from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

    from eudravig_assets.definitions import build_definitions
    from eudravig_assets.partitions import icsr_files
    from eudravig_assets.resources import EudravigDatabase, EudravigSource
    from py_load_eudravigilance.fixtures.generator import CorpusSpec, write_corpus
    from tests.support.db import query

    paths = write_corpus(tmp_path / "in", CorpusSpec(files=2, cases_per_file=5, seed=12, follow_up_fraction=0.0))
    keys = [p.name for p in paths]
    dagster_instance.add_dynamic_partitions(icsr_files.name, keys)
    database = tmp_path / "plugin.db"
    defs = build_definitions(EudravigDatabase(dsn=f"pvlite:///{database}"), EudravigSource(source_uri=str(tmp_path / "in")))

    result = defs.resolve_job_def("load_icsr_files").execute_in_process(
        instance=dagster_instance, tags={ASSET_PARTITION_RANGE_START_TAG: keys[0], ASSET_PARTITION_RANGE_END_TAG: keys[-1]}
    )

    assert result.success
    assert query(f"sqlite:///{database}", "SELECT COUNT(*) FROM icsr_master") == [(10,)]
    assert all(check.passed for check in result.get_asset_check_evaluations())


def test_a_plugin_from_the_guide_gets_the_same_outcomes_and_commands_as_the_built_in_loaders(
    installed_plugin: Path, tmp_path: Path
) -> None:
    """Garbage and truncated files fail (exit 1), rejected messages make a file partial, and init-db,
    validate-db-schema, status and signals work through the plugin, with no method beyond the guide's."""
    from py_load_eudravigilance.fixtures.generator import CaseSpec, build_batch, build_message
    from tests.test_cli import run_cli

    folder = tmp_path / "in"
    folder.mkdir()
    good = build_batch([build_message(CaseSpec("PLUG-1")), build_message(CaseSpec("PLUG-2", most_recent_info="bad"))])
    (folder / "a-good.xml").write_text(good, encoding="utf-8")
    (folder / "b-garbage.xml").write_text("garbage", encoding="utf-8")
    (folder / "c-truncated.xml").write_text(good[: len(good) // 2], encoding="utf-8")
    dsn = f"pvlite:///{tmp_path / 'plugin.db'}"

    # The commands run in this process, where the fixture made the plugin importable
    assert run_cli("init-db", "--dsn", dsn).returncode == 0
    result = run_cli("run", str(folder), "--dsn", dsn, "--workers", "1")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "0 completed, 1 partial, 2 failed" in result.stdout, result.stdout
    status = run_cli("status", "--dsn", dsn)
    assert status.returncode == 0 and status.stdout.count("failed") == 2 and "partial" in status.stdout
    assert run_cli("validate-db-schema", "--dsn", dsn).stdout.strip().endswith("schema is valid")
    signals = run_cli("signals", "--dsn", dsn)
    assert signals.returncode == 0 and "1 drug-event pairs" in signals.stdout, signals.stdout + signals.stderr


def copy_text_streams(batch: Path) -> dict[str, BytesIO]:
    """A staged batch's tables as the guide's COPY text streams."""
    from loaders.guide import as_copy_text
    from py_load_eudravigilance.staging.layout import STAGED_COLUMNS, table_file

    return {
        name: BytesIO(as_copy_text(table_file(batch, name).read_bytes(), name))
        for name in STAGED_COLUMNS
        if table_file(batch, name).exists()
    }


def test_every_guide_method_works_over_a_built_in_loader(tmp_path: Path) -> None:
    """A plugin delegating to a built-in loader (GuideMethods) gets each guide method working, each on its own."""
    from loaders.base import schema_definition
    from loaders.guide import GuideMethods
    from loaders.sqlite import SQLiteLoader
    from py_load_eudravigilance.fixtures.generator import CaseSpec, build_batch, build_message
    from py_load_eudravigilance.staging import sha256_of, stage_files
    from py_load_eudravigilance.staging.cores import create_core
    from py_load_eudravigilance.staging.layout import STAGED_COLUMNS
    from tests.support.db import query

    source = tmp_path / "guide.xml"
    source.write_text(build_batch([build_message(CaseSpec(f"GUIDE-{n}")) for n in range(3)]), encoding="utf-8")
    digest = sha256_of(source)
    group = stage_files([(source, source.name, digest)], tmp_path / "staged", create_core("python"))
    (batch,) = group.batches()
    dsn = f"sqlite:///{tmp_path / 'guide.db'}"
    methods = GuideMethods(SQLiteLoader(dsn))

    methods.create_all_tables()
    assert methods.validate_schema(schema_definition(methods.loader.metadata))
    assert methods.get_completed_file_hashes() == set()

    # The audit rows alone, twice: versions already logged are left out
    for _ in range(2):
        methods.load_audit_data(copy_text_streams(batch)["icsr_audit_log"], 3, "delta", source.name, digest)
    assert query(dsn, "SELECT COUNT(*) FROM icsr_audit_log") == [(3,)]

    # A whole file, in one transaction: its cases, and its history row completed
    methods.load_normalized_data(copy_text_streams(batch), group.files[0].row_counts, "delta", source.name, digest)
    assert query(dsn, "SELECT COUNT(*) FROM icsr_master") == [(3,)]
    assert methods.get_completed_file_hashes() == {digest}

    # One table by the three-step path: a staging table, the native bulk load, the upsert (replacing matching rows)
    columns = STAGED_COLUMNS["reactions"]
    staged_rows = f"SELECT {', '.join(columns)} FROM reactions ORDER BY 1, 2"
    reactions = query(dsn, staged_rows)
    keys = [column.name for column in methods.loader.table("reactions").primary_key.columns]
    with methods.engine.begin() as conn:
        staging = methods.prepare_load(conn, "reactions", "delta")
        methods.bulk_load_native(conn, copy_text_streams(batch)["reactions"], staging, list(columns))
        methods.handle_upsert(conn, staging, "reactions", keys, None)
    assert len(reactions) == 3 and query(dsn, staged_rows) == reactions
    with methods.engine.begin() as conn:
        methods.prepare_load(conn, "reactions", "full")  # a full reload empties the table
    assert query(dsn, "SELECT COUNT(*) FROM reactions") == [(0,)]


"""A loader plugin written exactly as the published guide says is discovered and chosen."""

from __future__ import annotations

import subprocess
import sys
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


@pytest.fixture
def installed_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    package = tmp_path / "plugin"
    (package / "my_redshift_loader").mkdir(parents=True)
    (package / "pyproject.toml").write_text(PLUGIN_PYPROJECT)
    (package / "my_redshift_loader" / "__init__.py").write_text("")
    (package / "my_redshift_loader" / "loader.py").write_text(PLUGIN_LOADER)
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-build-isolation", "--no-deps", "--target", str(target), str(package)],
        check=True,
    )
    monkeypatch.syspath_prepend(str(target))
    return target


def test_plugin_from_the_guide_is_chosen_by_dialect(installed_plugin: Path) -> None:
    loader = get_loader("redshift+psycopg2://analyst:secret@warehouse.example:5439/pv")
    assert type(loader).__name__ == "RedshiftLoader"
    assert type(loader).__module__ == "my_redshift_loader.loader"


def test_backend_is_read_without_importing_the_driver() -> None:
    assert backend_name("redshift+psycopg2://u:p@h/db") == "redshift"
    assert backend_name("snowflake://u:p@account/db") == "snowflake"
    assert backend_name("postgresql://u@h/db") == "postgresql"

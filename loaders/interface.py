"""The loader plugin contract, exactly as published in the plugin guide.

A database is supported by a class implementing these methods, registered under its SQLAlchemy
dialect name in the ``py_load_eudravigilance.loaders`` entry-point group.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from io import IOBase
from typing import Any

from sqlalchemy.engine import Connection


class LoaderInterface(ABC):
    """What the pipeline needs from a target database."""

    @abstractmethod
    def __init__(self, dsn_or_engine: Any) -> None: ...

    @abstractmethod
    def validate_schema(self, schema_definition: dict[str, Any]) -> bool:
        """True when the database holds every table and column of ``schema_definition``."""

    @abstractmethod
    def prepare_load(self, conn: Connection, target_table: str, load_mode: str) -> str:
        """Empty ``target_table`` in 'full' mode; create and return the staging table's name."""

    @abstractmethod
    def bulk_load_native(self, conn: Connection, data_stream: IOBase, target_table: str, columns: list[str]) -> None:
        """Move a CSV stream into ``target_table`` with the database's native bulk path."""

    @abstractmethod
    def handle_upsert(
        self, conn: Connection, staging_table: str, target_table: str, primary_keys: list[str], version_key: str | None
    ) -> None:
        """Merge staged rows into ``target_table``."""

    @abstractmethod
    def create_all_tables(self) -> None:
        """Create every table of the schema that does not exist yet."""

    @abstractmethod
    def get_completed_file_hashes(self) -> set[str]:
        """SHA-256 of every file whose load completed (``delta`` mode skips them)."""

    @abstractmethod
    def load_normalized_data(
        self, buffers: dict[str, IOBase], row_counts: dict[str, int], load_mode: str, file_path: str, file_hash: str
    ) -> None:
        """Load one file's staged tables in one transaction."""

    @abstractmethod
    def load_audit_data(self, buffer: IOBase, row_count: int, load_mode: str, file_path: str, file_hash: str) -> None:
        """Append one file's case versions to the audit log."""

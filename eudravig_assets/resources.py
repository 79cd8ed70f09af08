"""Dagster resources: the target database and the source/quarantine locations.

Configured from the environment (``EnvVar``) so the UI shows variable names, never the values:
``PY_LOAD_EUDRAVIGILANCE_DATABASE__DSN``, ``PY_LOAD_EUDRAVIGILANCE_SOURCE_URI`` and
``PY_LOAD_EUDRAVIGILANCE_QUARANTINE_URI``. S3 access uses dagster-aws's ``S3Resource`` with the
standard AWS settings, so ``AWS_ENDPOINT_URL`` points it at any S3-compatible store.
"""

import os
from typing import Any

from dagster import ConfigurableResource, EnvVar
from pydantic import PrivateAttr
from sqlalchemy.engine import make_url

from eudravig_assets.catalog import Catalog
from loaders.contract import Loader
from loaders.readback import TableReader
from loaders.registry import loader_for
from py_load_eudravigilance.pipeline import redact_dsn
from py_load_eudravigilance.settings import DEFAULT_DSN, DEFAULT_SOURCE, DSN_ENV, QUARANTINE_ENV, SOURCE_ENV, load_settings
from py_load_eudravigilance.sources import SourceLocation, parse_location


class EudravigDatabase(ConfigurableResource):
    """The target database; its SQLAlchemy dialect selects the loader plugin."""

    dsn: str = DEFAULT_DSN
    db_schema: str | None = None

    _loader: Loader | None = PrivateAttr(default=None)

    def loader(self) -> Loader:
        if self._loader is None:
            self._loader = loader_for(self.dsn, self.db_schema)
        return self._loader

    def reader(self) -> TableReader:
        return TableReader(self.loader().engine, self.db_schema)

    @property
    def display_name(self) -> str:
        return redact_dsn(self.dsn)

    def table_name(self, table: str) -> str:
        """The table's fully qualified name, as ``dagster/table_name`` wants it: database, schema, table."""
        url = make_url(self.dsn)
        if url.get_backend_name() == "sqlite":
            return f"main.{table}"
        return f"{url.database}.{self.db_schema or 'public'}.{table}"


class EudravigSource(ConfigurableResource):
    """Where ICSR files arrive (folder, glob or s3:// prefix) and where rejected files go."""

    source_uri: str = DEFAULT_SOURCE
    quarantine_uri: str | None = None
    files_per_run: int = 200  # sensors batch this many new files into one run

    def location(self) -> SourceLocation:
        return parse_location(self.source_uri)

    def quarantine(self) -> SourceLocation | None:
        return parse_location(self.quarantine_uri) if self.quarantine_uri else None


def _env_or(name: str, configured: Any) -> Any:
    """``EnvVar(name)`` when the variable is set (resolved at run time, shown by name), else the configured value."""
    return EnvVar(name) if os.environ.get(name) else configured


def database_from_env() -> EudravigDatabase:
    """The database as the environment and the configuration file say (environment first)."""
    settings = load_settings()
    return EudravigDatabase(dsn=_env_or(DSN_ENV, settings.database.dsn), db_schema=settings.database.db_schema)


def catalog_from_env() -> Catalog:
    """Kinds from the configured database and source (resolved now: kinds are part of the definitions), owners and
    tags from the ``catalog`` settings."""
    settings = load_settings()
    return Catalog.of(settings.database.dsn, settings.source_uri or DEFAULT_SOURCE, settings.catalog)


def source_from_env() -> EudravigSource:
    settings = load_settings()
    return EudravigSource(
        source_uri=_env_or(SOURCE_ENV, settings.source_uri or DEFAULT_SOURCE),
        quarantine_uri=_env_or(QUARANTINE_ENV, settings.quarantine_uri),
    )

"""Choose the loader for a DSN or engine by its SQLAlchemy backend name, through entry points."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from sqlalchemy.engine import Engine, make_url

from loaders.contract import Loader
from loaders.guide import GuideLoader
from loaders.interface import LoaderInterface

ENTRY_POINT_GROUP = "py_load_eudravigilance.loaders"


class UnknownLoaderError(LookupError):
    """No installed loader is registered for the DSN's backend."""


def backend_name(dsn_or_engine: str | Engine) -> str:
    """``redshift+psycopg2://...`` -> ``redshift``, without importing the driver."""
    if isinstance(dsn_or_engine, Engine):
        return dsn_or_engine.dialect.name
    return make_url(dsn_or_engine).get_backend_name()


def installed_loaders() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def get_loader_class(dsn_or_engine: str | Engine) -> type[Loader] | type[LoaderInterface]:
    name = backend_name(dsn_or_engine)
    available = installed_loaders()
    if name not in available:
        listing = ", ".join(sorted(available)) or "none"
        raise UnknownLoaderError(f"no loader registered for database backend '{name}'; installed loaders: {listing}")
    loader_class = available[name].load()
    if not (isinstance(loader_class, type) and issubclass(loader_class, Loader | LoaderInterface)):
        raise UnknownLoaderError(f"entry point '{name}' names neither a Loader nor a LoaderInterface class")
    return loader_class


def get_loader(dsn_or_engine: str | Engine, schema: str | None = None) -> Loader:
    """The loader registered for the DSN's (or engine's) backend; a plugin written as the guide says comes
    wrapped in :class:`GuideLoader`, so the pipeline always deals with one contract."""
    loader_class = get_loader_class(dsn_or_engine)
    options = {"schema": schema} if schema else {}
    if issubclass(loader_class, Loader):
        return loader_class(dsn_or_engine, **options)
    return GuideLoader(loader_class(dsn_or_engine), dsn_or_engine, schema)


def loader_for(dsn: str, schema: str | None = None) -> Loader:
    """The DSN's loader, writing into ``schema`` when one is given (else the database's default)."""
    return get_loader(dsn, schema)

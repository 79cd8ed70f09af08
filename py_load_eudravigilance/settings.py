"""Settings shared by every entry point (CLI, Dagster): ``config.yaml``, environment, command line.

Precedence: command line > environment (``PY_LOAD_EUDRAVIGILANCE_*``, ``__`` for nesting, e.g.
``PY_LOAD_EUDRAVIGILANCE_DATABASE__DSN``) > the configuration file > defaults. The file is the one
given with ``--config``, else ``$PY_LOAD_EUDRAVIGILANCE_CONFIG``, else ``./config.yaml`` if present.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

# The names live in a module of their own, which the command line's help reads without importing this one
from py_load_eudravigilance.environment import CONFIG_ENV, DEFAULT_DSN, DSN_ENV, ENV_PREFIX, QUARANTINE_ENV, SOURCE_ENV  # noqa: F401
from py_load_eudravigilance.signals import DEFAULT_DRUG_ROLES

# Variables with the prefix that are not settings: the file's path, and the mapper choice that
# staging/cores.py reads itself (in every worker process, where no Settings exist)
NOT_SETTINGS = frozenset({CONFIG_ENV, f"{ENV_PREFIX}MAPPER"})
DEFAULT_SOURCE = "data/incoming"
DEFAULT_CONFIG_FILE = Path("config.yaml")


class SettingsError(ValueError):
    """A configuration value is missing, unknown or invalid; the message names it."""


class DatabaseSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dsn: str = DEFAULT_DSN
    db_schema: str | None = Field(default=None, alias="schema")

    @field_validator("dsn")
    @classmethod
    def _parsable(cls, value: str) -> str:
        try:
            url = make_url(value)
        except (ArgumentError, ValueError):  # never the parser's message: it quotes the DSN, password included
            raise ValueError("not a SQLAlchemy URL (dialect+driver://user:password@host:port/database)") from None
        if url.host and "@" in url.host:  # the password's tail would be taken for the host, and shown in errors
            raise ValueError("the user or password holds an '@': write it as %40 (percent-encoded)")
        return value


def comma_separated(value: Any) -> Any:
    """A list given as one string in the environment: ``a, b`` -> ``["a", "b"]``."""
    return [item.strip() for item in value.split(",") if item.strip()] if isinstance(value, str) else value


class CatalogSettings(BaseModel):
    """How the Dagster catalogue presents the assets: their owners (``team:name`` or e-mail addresses) and tags.
    From the environment: ``..._CATALOG__OWNERS=team:pv,ana@example.org`` and ``..._CATALOG__TAGS=domain=pv,tier=gold``."""

    model_config = ConfigDict(extra="forbid")

    owners: list[str] = []
    tags: dict[str, str] = {}

    @field_validator("owners", mode="before")
    @classmethod
    def _owner_list(cls, value: Any) -> Any:
        return comma_separated(value)

    @field_validator("tags", mode="before")
    @classmethod
    def _tag_pairs(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        pairs = [pair.partition("=") for pair in comma_separated(value)]
        if any(not sep for _, sep, _ in pairs):
            raise ValueError("write tags as key=value pairs separated by commas")
        return {key.strip(): tag.strip() for key, _, tag in pairs}


class SignalSettings(BaseModel):
    """What the drug-event statistics count: drugs of these G.k.1 roles (1 suspect, 2 concomitant, 3 interacting,
    4 not administered), events as PTs of this MedDRA version. From the environment: ``..._SIGNALS__DRUG_ROLES=1,3``."""

    model_config = ConfigDict(extra="forbid")

    drug_roles: list[str] = list(DEFAULT_DRUG_ROLES)
    # The MedDRA version whose PTs the events are (``..._SIGNALS__MEDDRA_VERSION``); None: the latest release loaded
    meddra_version: str | None = None

    @field_validator("drug_roles", mode="before")
    @classmethod
    def _role_list(cls, value: Any) -> Any:
        roles = [str(role).strip() for role in comma_separated(value)]
        if not roles or any(role not in ("1", "2", "3", "4") for role in roles):
            raise ValueError("drug roles are G.k.1 codes: 1 suspect, 2 concomitant, 3 interacting, 4 not administered")
        return roles


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    database: DatabaseSettings = DatabaseSettings()
    catalog: CatalogSettings = CatalogSettings()
    signals: SignalSettings = SignalSettings()
    source_uri: str | None = None
    quarantine_uri: str | None = None
    mode: str = "delta"
    workers: int = Field(default=os.cpu_count() or 1, ge=1)

    @field_validator("mode")
    @classmethod
    def _known_mode(cls, value: str) -> str:
        if value not in ("delta", "full"):
            raise ValueError("must be 'delta' or 'full'")
        return value


def _env_tree(environ: Mapping[str, str]) -> dict[str, Any]:
    """``PY_LOAD_EUDRAVIGILANCE_DATABASE__DSN=x`` -> ``{"database": {"dsn": "x"}}``."""
    tree: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name in NOT_SETTINGS:
            continue
        path = name[len(ENV_PREFIX) :].lower().split("__")
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return tree


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping):
            # Options left unset (None) fall through to the layers below, at every depth
            below = merged.get(key)
            merged[key] = _merge(below if isinstance(below, Mapping) else {}, value)
        elif value is not None:
            merged[key] = value
    return merged


def config_file(explicit: str | Path | None, environ: Mapping[str, str]) -> Path | None:
    if explicit:
        return Path(explicit)
    if environ.get(CONFIG_ENV):
        return Path(environ[CONFIG_ENV])
    return DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.is_file() else None


def read_config_file(path: Path) -> dict[str, Any]:
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SettingsError(f"cannot read configuration file {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        # Where and what, never the text around it: the line may hold a password (dsn: ...://user:secret@...)
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "unreadable"
        raise SettingsError(f"configuration file {path} is not valid YAML{where}: {problem}") from None
    if content is None:
        return {}
    if not isinstance(content, dict):
        raise SettingsError(f"configuration file {path} must hold a mapping of settings")
    return content


def load_settings(
    overrides: Mapping[str, Any] | None = None, config_path: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Settings from the file, the environment and ``overrides`` (command line), in rising precedence."""
    environ = os.environ if environ is None else environ
    path = config_file(config_path, environ)
    values: dict[str, Any] = read_config_file(path) if path else {}
    values = _merge(values, _env_tree(environ))
    values = _merge(values, overrides or {})
    try:
        return Settings.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors())
        origin = f" (configuration file {path})" if path else ""
        raise SettingsError(f"invalid settings{origin}: {problems}") from None

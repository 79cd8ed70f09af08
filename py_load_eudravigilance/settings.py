"""Names of the settings every entry point shares (CLI, Dagster, ``config.yaml``)."""

from __future__ import annotations

ENV_PREFIX = "PY_LOAD_EUDRAVIGILANCE_"
DSN_ENV = f"{ENV_PREFIX}DATABASE__DSN"
SOURCE_ENV = f"{ENV_PREFIX}SOURCE_URI"
QUARANTINE_ENV = f"{ENV_PREFIX}QUARANTINE_URI"
DEFAULT_DSN = "sqlite:///eudravig.db"
DEFAULT_SOURCE = "data/incoming"

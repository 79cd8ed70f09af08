"""Names of the settings' environment variables and defaults, importable at no cost.

The command line shows them in its help before any command runs; importing the settings module
itself would load pydantic, YAML and SQLAlchemy first (``--version`` and ``--help`` stay instant).
"""

ENV_PREFIX = "PY_LOAD_EUDRAVIGILANCE_"
DSN_ENV = f"{ENV_PREFIX}DATABASE__DSN"
SOURCE_ENV = f"{ENV_PREFIX}SOURCE_URI"
QUARANTINE_ENV = f"{ENV_PREFIX}QUARANTINE_URI"
CONFIG_ENV = f"{ENV_PREFIX}CONFIG"
DEFAULT_DSN = "sqlite:///eudravig.db"

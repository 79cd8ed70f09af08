"""Configuration: command line > environment > config.yaml > defaults, with clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from py_load_eudravigilance.settings import DSN_ENV, SettingsError, load_settings


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text("database:\n  dsn: sqlite:///from-file.db\nsource_uri: s3://bucket/in/\nworkers: 3\n")
    return path


def test_precedence_is_command_line_then_environment_then_file(config: Path) -> None:
    from_file = load_settings(config_path=config, environ={})
    assert (from_file.database.dsn, from_file.source_uri, from_file.workers) == ("sqlite:///from-file.db", "s3://bucket/in/", 3)

    environ = {DSN_ENV: "sqlite:///from-env.db", "PY_LOAD_EUDRAVIGILANCE_WORKERS": "5"}
    from_env = load_settings(config_path=config, environ=environ)
    assert (from_env.database.dsn, from_env.workers, from_env.source_uri) == ("sqlite:///from-env.db", 5, "s3://bucket/in/")

    from_cli = load_settings({"database": {"dsn": "sqlite:///from-cli.db"}, "workers": None}, config_path=config, environ=environ)
    assert (from_cli.database.dsn, from_cli.workers) == ("sqlite:///from-cli.db", 5)


def test_config_file_from_the_environment(config: Path) -> None:
    assert load_settings(environ={"PY_LOAD_EUDRAVIGILANCE_CONFIG": str(config)}).workers == 3


@pytest.mark.parametrize(
    ("content", "environ", "message"),
    [
        ("database:\n  dsn: not a url\n", {}, "database.dsn: Value error, not a SQLAlchemy URL"),
        ("mode: sometimes\n", {}, "mode: Value error, must be 'delta' or 'full'"),
        ("workers: 0\n", {}, "workers: Input should be greater than or equal to 1"),
        ("sourse_uri: typo\n", {}, "sourse_uri: Extra inputs are not permitted"),
        ("", {"PY_LOAD_EUDRAVIGILANCE_DATABASE__PASSWORD": "hunter2"}, "database.password: Extra inputs are not permitted"),
        ("- a list\n", {}, "must hold a mapping"),
        ("database: [unclosed\n", {}, "is not valid YAML"),
    ],
)
def test_invalid_settings_are_named_and_secrets_not_echoed(tmp_path: Path, content: str, environ: dict[str, str], message: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(content)
    with pytest.raises(SettingsError) as raised:
        load_settings(config_path=path, environ=environ)
    assert message in str(raised.value)
    assert "hunter2" not in str(raised.value)


def test_missing_config_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="cannot read configuration file"):
        load_settings(config_path=tmp_path / "absent.yaml", environ={})


def test_catalog_owners_and_tags_come_from_the_environment_as_lists() -> None:
    environ = {
        "PY_LOAD_EUDRAVIGILANCE_CATALOG__OWNERS": "team:pv, ana@example.org",
        "PY_LOAD_EUDRAVIGILANCE_CATALOG__TAGS": "domain=safety,tier=gold",
    }
    catalog = load_settings(environ=environ).catalog
    assert catalog.owners == ["team:pv", "ana@example.org"]
    assert catalog.tags == {"domain": "safety", "tier": "gold"}
    with pytest.raises(SettingsError, match="catalog.tags: .*key=value"):
        load_settings(environ={"PY_LOAD_EUDRAVIGILANCE_CATALOG__TAGS": "domain"})

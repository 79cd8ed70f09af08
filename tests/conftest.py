"""Shared fixtures: generated E2B(R3) files, and a fresh database per test on each dialect."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg2
import pytest
from sqlalchemy import create_engine, text

from loaders.upkeep import load_meddra
from py_load_eudravigilance.fixtures.generator import CaseSpec, build_batch, build_message

SHARED_E2B = Path(__file__).resolve().parents[2] / "shared" / "e2b"
PG_HOST = os.environ.get("PGHOST", "127.0.0.1")
PG_USER = os.environ.get("PGUSER", "postgres")
PG_ADMIN_DB = os.environ.get("PGDATABASE", "postgres")


def postgres_available() -> str | None:
    """None when a server answers, else the reason it does not."""
    try:
        psycopg2.connect(host=PG_HOST, user=PG_USER, dbname=PG_ADMIN_DB, connect_timeout=3).close()
        return None
    except psycopg2.OperationalError as exc:
        return str(exc).strip()


@pytest.fixture(scope="session")
def postgres_server() -> str:
    reason = postgres_available()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is required under CI=true but is not reachable at {PG_HOST}: {reason}")
        pytest.skip(f"no PostgreSQL reachable at {PG_HOST}: {reason}")
    return PG_HOST


@contextmanager
def postgres_database(server: str, prefix: str = "eudravig_test") -> Iterator[str]:
    """A fresh, empty PostgreSQL database, dropped afterwards; yields its DSN."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(f"postgresql+psycopg2://{PG_USER}@{server}/{PG_ADMIN_DB}", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql+psycopg2://{PG_USER}@{server}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def postgres_dsn(postgres_server: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test."""
    with postgres_database(postgres_server) as dsn:
        yield dsn


@pytest.fixture
def sqlite_dsn(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'eudravig.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def dsn(request: pytest.FixtureRequest) -> str:
    """Each loader test runs on the embedded default and on a real PostgreSQL."""
    return request.getfixturevalue("sqlite_dsn" if request.param == "sqlite" else "postgres_dsn")


ANALYST_MEDDRA_VERSION = "26.1"  # the version the generated reactions are coded with


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def analyst_dsn(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A database loaded with a generated corpus (follow-ups, nullifications, literature cases) and a tiny MedDRA
    release of the reactions' version; shared by a module's read-only tests, on each dialect."""
    from loaders.registry import get_loader
    from py_load_eudravigilance.fixtures.generator import CorpusSpec, write_corpus
    from py_load_eudravigilance.meddra import read_release
    from py_load_eudravigilance.pipeline import run_load
    from tests.support.meddra import write_release

    root = tmp_path_factory.mktemp("analyst")
    corpus = root / "corpus"
    write_corpus(corpus, CorpusSpec(files=3, cases_per_file=25, seed=19, follow_up_fraction=0.4, nullification_fraction=0.1))
    release = read_release(write_release(root / "meddra", ANALYST_MEDDRA_VERSION))
    with contextlib.ExitStack() as stack:
        if request.param == "sqlite":
            dsn = f"sqlite:///{root / 'analyst.db'}"
        else:
            dsn = stack.enter_context(postgres_database(request.getfixturevalue("postgres_server")))
        summary = run_load(corpus, dsn, workers=1)
        assert summary.exit_code == 0, summary
        load_meddra(get_loader(dsn).engine, release)
        yield dsn


# One current version of each FDA example case: Scenario6's version of US-APHARMA-8744554B (two substances in one
# drug, action taken, rechallenge, both time intervals, two reporters) would lose to Scenario3's
FDA_CURRENT = ("FAERS2022Scenario2.xml", "FAERS2022Scenario4.xml", "FAERS2022Scenario5-1.xml", "FAERS2022Scenario6.xml")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def fda_dsn(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The FDA's E2B(R3) example cases loaded, on each dialect (skipped without ../shared/e2b)."""
    from py_load_eudravigilance.pipeline import run_load

    examples = SHARED_E2B / "fda-examples"
    if not all((examples / name).exists() for name in FDA_CURRENT):
        pytest.skip("needs ../shared/e2b (FDA example instances)")
    root = tmp_path_factory.mktemp("fda")
    (root / "e2b").mkdir()
    for name in FDA_CURRENT:
        shutil.copy(examples / name, root / "e2b" / name)
    with contextlib.ExitStack() as stack:
        if request.param == "sqlite":
            dsn = f"sqlite:///{root / 'fda.db'}"
        else:
            dsn = stack.enter_context(postgres_database(request.getfixturevalue("postgres_server")))
        assert run_load(root / "e2b", dsn, workers=1).exit_code == 0
        yield dsn


@pytest.fixture
def write_batch(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Write a batch file of the given cases; returns its path."""

    def write(name: str, *cases: CaseSpec, folder: str = "in") -> Path:
        directory = tmp_path / folder
        directory.mkdir(exist_ok=True)
        path = directory / name
        path.write_text(build_batch([build_message(c) for c in cases], batch_number=name), encoding="utf-8")
        return path

    return write


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """A real S3 API on loopback: moto in server mode, in its own process, reached over HTTP."""
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.1)
    else:
        process.kill()
        pytest.fail("moto server did not start")
    try:
        yield endpoint
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def s3_bucket(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[object, str]]:
    """A fresh bucket; the standard AWS variables point every client (and worker process) at it."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing-key-id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret-key")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    import boto3

    client = boto3.client("s3")
    bucket = f"icsr-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=bucket)
    yield client, bucket


@pytest.fixture
def dagster_instance() -> Iterator[object]:
    """A persistent, throwaway Dagster instance (sensors need one)."""
    from dagster import instance_for_test

    with instance_for_test() as instance:
        yield instance

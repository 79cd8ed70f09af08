"""Reading a test database back: raw queries and full-content snapshots for comparisons."""

from __future__ import annotations

from sqlalchemy import create_engine, text

from py_load_eudravigilance.schema import CASE_TABLE_NAMES


def query(dsn: str, sql: str) -> list[tuple]:
    engine = create_engine(dsn)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(text(sql))]
    finally:
        engine.dispose()


def snapshot(dsn: str) -> dict[str, list[tuple]]:
    """Full contents of every case table, minus load timestamps."""
    tables = {}
    for table in CASE_TABLE_NAMES:
        rows = query(dsn, f'SELECT * FROM "{table}"')
        tables[table] = sorted(tuple(str(v) for v in row) for row in rows)
    master = query(
        dsn,
        "SELECT safetyreportid, most_recent_info_date, is_nullified, source_file_sha256, message_position FROM icsr_master ORDER BY 1",
    )
    tables["icsr_master"] = [tuple(str(v) for v in row) for row in master]
    return tables

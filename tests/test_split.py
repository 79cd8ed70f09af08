"""A batch file cut into byte ranges of whole messages (staging/split.py) loads exactly as the whole file.

Pure tests of the scan on tricky bytes (prefixed tags, the tag's text in comments, CDATA and PIs,
header elements after the messages, refusals), a property over mutated documents (a split either
reads exactly as the whole file or fails where a shard can tell), and loads by the compiled mapper
on both dialects compared table by table with the unsplit load.
"""

from __future__ import annotations

import gzip
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from py_load_eudravigilance.fixtures.generator import CaseSpec, build_batch, build_message
from py_load_eudravigilance.mapping.mapper import CaseMapper
from py_load_eudravigilance.parsing.reader import BatchReader, open_source
from py_load_eudravigilance.pipeline import run_load
from py_load_eudravigilance.planning import PlanLimits, Planner
from py_load_eudravigilance.staging import split
from py_load_eudravigilance.staging.cores import compiled_core_problem
from tests.support.db import query, snapshot
from tests.test_compiled import MUST_BE_BUILT

NAME = "PORR_IN049016UV"
SMALLEST_CHUNK = 1024  # the scan's smallest window: message boundaries fall across window ends


def messages(count: int, with_comments: bool = False) -> list[str]:
    return [build_message(CaseSpec(f"SPLIT-{n:03d}"), with_comments) for n in range(count)]


def prefixed(document: str) -> str:
    """The batch with its messages' tags in the prefix ``hl7`` (declared on the root), their content unprefixed."""
    document = document.replace(" ITSVersion=", ' xmlns:hl7="urn:hl7-org:v3" ITSVersion=', 1)
    return document.replace(f"<{NAME}>", f'<hl7:{NAME} xmlns="urn:hl7-org:v3">').replace(f"</{NAME}>", f"</hl7:{NAME}>")


def tricky() -> str:
    """A batch whose bytes hold the message tag's text where it is no tag, and more between and after the messages."""
    body = messages(12, with_comments=True)
    fake = f"<{NAME}></{NAME}><hl7:{NAME}>"
    body[1] = body[1].replace("<processingCode", f"<!-- {fake} a comment's '!' and '?' --><processingCode", 1)
    body[2] = body[2].replace("<processingCode", f"<?note {fake} ?><processingCode", 1)
    body[3] = body[3].replace("reactions listed", f"reactions listed <![CDATA[ {fake} <!-- ]]> -- what? &amp; wow!", 1)
    body[4] = body[4].replace("reactions listed", f"reactions listed &lt;{NAME}&gt;", 1)
    document = build_batch(body)
    # Between messages: blanks, comments (with the start tag's text) and PIs; after them: the trailing header
    return document.replace(f"</{NAME}>\n<{NAME}>", f"</{NAME}>\n  <!-- next: </{NAME}><{NAME}> -->\n<?pi {NAME}?>\n\t<{NAME}>", 3)


def entries_of(reader: BatchReader) -> list[tuple[int, bytes, str | None]]:
    """Every entry the reader yields: position, the element as the audit log keeps it, and its problem if any."""
    return [(position, etree.tostring(element, with_tail=False), problem) for position, element, problem in reader.entries()]


def read_whole(path: Path) -> tuple[list[tuple[int, bytes, str | None]], dict[str, object]]:
    """Every entry of the whole file, and its batch header."""
    with open_source(path, path.name) as source:
        reader = BatchReader(source, path.name)
        return entries_of(reader), CaseMapper().map_batch_header(reader.root)


def read_pieces(path: Path, layout: split.Layout) -> tuple[list[tuple[int, bytes, str | None]], dict[str, object]]:
    """The same, read shard by shard from the split: positions offset by the messages before each range."""
    entries: list[tuple[int, bytes, str | None]] = []
    header: dict[str, object] = {}
    for index, piece in enumerate(layout.pieces):
        with split.open_piece(path, path.name, layout, piece) as source:
            reader = BatchReader(source, path.name)
            read = [(piece.before + position, serialized, problem) for position, serialized, problem in entries_of(reader)]
        if len(read) != piece.messages:
            raise split.SplitFailed(f"{len(read)} entries in a range of {piece.messages} messages")
        entries += read
        if index == 0:
            header = CaseMapper().map_batch_header(reader.root)
    return entries, header


def write(path: Path, document: str | bytes) -> Path:
    path.write_bytes(document.encode() if isinstance(document, str) else document)
    return path


SHAPES = {"plain": lambda: build_batch(messages(12)), "prefixed": lambda: prefixed(build_batch(messages(12))), "tricky": tricky}


@pytest.mark.parametrize("shards", [2, 3, 7])
@pytest.mark.parametrize("chunk", [SMALLEST_CHUNK, 4096, split.SCAN_CHUNK])
@pytest.mark.parametrize("shape", SHAPES)
def test_each_shard_reads_its_messages_at_their_positions_in_the_whole_file(tmp_path: Path, shape: str, chunk: int, shards: int) -> None:
    path = write(tmp_path / "batch.xml", SHAPES[shape]())

    layout = split.layout_of(path, shards, chunk)

    assert layout is not None
    assert [piece.before for piece in layout.pieces] == sorted(piece.before for piece in layout.pieces)
    assert sum(piece.messages for piece in layout.pieces) == 12 and all(piece.messages for piece in layout.pieces)
    data = path.read_bytes()
    assert all(data[piece.start : piece.start + 20].startswith((b"<PORR", b"<hl7:PORR")) for piece in layout.pieces)
    assert data[layout.tail_start :].lstrip().startswith(b"<receiver")  # the trailing header is the tail's
    whole, header = read_whole(path)
    assert header["batch_receiver_id"] == "EVHUMAN" and header["batch_sender_id"] == "MAH-0001"
    assert read_pieces(path, layout) == (whole, header)


def test_the_cuts_balance_the_bytes_and_leave_empty_ranges_when_messages_are_fewer_than_shards(tmp_path: Path) -> None:
    path = write(tmp_path / "batch.xml", build_batch(messages(40)))
    (first, second) = split.layout_of(path, 2).pieces  # type: ignore[union-attr]
    assert abs(first.messages - second.messages) <= 1

    path = write(tmp_path / "three.xml", build_batch(messages(3)))
    layout = split.layout_of(path, 5)
    assert layout is not None
    assert sorted(piece.messages for piece in layout.pieces) == [0, 0, 1, 1, 1]  # a shard without messages reads the header only
    assert read_pieces(path, layout) == read_whole(path)


REFUSED = {
    "nested message": lambda body: body.replace("<processingCode", f"<{NAME}/><processingCode", 1),
    "empty message element": lambda body: body.replace(f"<{NAME}>", f"<{NAME}/>\n<{NAME}>", 1),
    "element between messages": lambda body: body.replace(f"</{NAME}>\n", f"</{NAME}>\n<stray/>", 1),
    "character data between messages": lambda body: body.replace(f"</{NAME}>\n", f"</{NAME}>text", 1),
    "CDATA between messages": lambda body: body.replace(f"</{NAME}>\n", f"</{NAME}><![CDATA[x]]>", 1),
    "DOCTYPE": lambda body: body.replace("?>\n", "?>\n<!DOCTYPE MCCI_IN200100UV01>\n", 1),
    "unterminated comment": lambda body: body.replace("<processingCode", "<!-- <processingCode", 1),
    "message not ended": lambda body: body.rsplit(f"</{NAME}>", 1)[0],
    "one message": lambda body: build_batch(messages(1)),
    "ISO-8859-1": lambda body: body.replace('encoding="UTF-8"', 'encoding="ISO-8859-1"', 1),
}


@pytest.mark.parametrize("change", REFUSED, ids=list(REFUSED))
def test_a_file_the_scan_cannot_cut_for_certain_is_not_split(tmp_path: Path, change: str) -> None:
    path = write(tmp_path / "batch.xml", REFUSED[change](build_batch(messages(6))))
    assert split.layout_of(path, 2, SMALLEST_CHUNK) is None


@pytest.mark.parametrize(
    "content",
    [
        gzip.compress(build_batch(messages(4)).encode()),
        build_batch(messages(4)).replace('encoding="UTF-8"', 'encoding="UTF-16"').encode("utf-16"),
        build_batch(messages(4)).encode("utf-16-le"),
    ],
    ids=["gzip", "UTF-16 with BOM", "UTF-16 without BOM"],
)
def test_compressed_and_multi_byte_files_are_not_split(tmp_path: Path, content: bytes) -> None:
    path = write(tmp_path / "batch.xml", content)
    assert not split.may_split(path)
    assert split.layout_of(path, 2) is None


def test_a_utf8_byte_order_mark_or_no_declaration_still_splits(tmp_path: Path) -> None:
    with_bom = write(tmp_path / "bom.xml", b"\xef\xbb\xbf" + build_batch(messages(4)).encode())
    undeclared = write(tmp_path / "bare.xml", build_batch(messages(4)).split("?>\n", 1)[1])
    for path in (with_bom, undeclared):
        assert split.may_split(path)
        layout = split.layout_of(path, 2)
        assert layout is not None and read_pieces(path, layout) == read_whole(path)


# -- a split never reads otherwise than the whole file without a shard noticing ---------------------------------------
SEED = tricky().encode()
CONSTRUCTS = [
    b"<!-- c -->",
    b"<!-- <PORR_IN049016UV> -->",
    b"<?pi </PORR_IN049016UV>?>",
    b"<![CDATA[<PORR_IN049016UV>]]>",
    b"<!--",
    b"-->",
    b"]]>",
    b"<PORR_IN049016UV>",
    b"</PORR_IN049016UV>",
    b"\n",
]


@st.composite
def altered_documents(draw: st.DrawFn) -> bytes:
    """The tricky batch with markup inserted, bytes deleted or duplicated: often malformed, sometimes subtly."""
    data = bytearray(SEED)
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["insert", "insert", "delete", "duplicate"]))
        if action == "insert":
            data[where:where] = draw(st.sampled_from(CONSTRUCTS))
        elif action == "delete":
            del data[where : where + draw(st.integers(1, 40))]
        else:
            data[where:where] = data[where : where + draw(st.integers(1, 400))]
    return bytes(data)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(document=altered_documents(), shards=st.integers(2, 5))
def test_a_split_reads_as_the_whole_file_or_a_shard_notices(tmp_path: Path, document: bytes, shards: int) -> None:
    path = write(tmp_path / "altered.xml", document)
    layout = split.layout_of(path, shards, SMALLEST_CHUNK)
    if layout is None:
        return
    try:
        pieces = read_pieces(path, layout)
    except Exception:  # noqa: BLE001 - whatever fails in a range, the pipeline raises SplitFailed and loads the file in one piece
        return
    assert pieces == read_whole(path)


# -- loads ------------------------------------------------------------------------------------------------------------
@pytest.fixture
def compiled_mapper() -> str:
    problem = compiled_core_problem()
    if problem is not None:
        if MUST_BE_BUILT:
            pytest.fail(f"CI must build and run the compiled mapper: {problem}")
        pytest.skip(problem)
    return "compiled"


# Files of any size are split (a test file stands for a large one), and staged in parts of a few messages
SPLIT_SMALL_FILES = PlanLimits(shard_min_bytes=1, part_messages=7)
# The same file, in one piece
IN_ONE_PIECE = PlanLimits(part_messages=7)


def loaded(dsn: str) -> dict[str, object]:
    """Everything a load leaves that must not depend on how the file was cut (load times aside)."""
    return {
        "tables": snapshot(dsn),
        "audit": query(dsn, "SELECT safetyreportid, file_name, message_position FROM icsr_audit_log ORDER BY 3"),
        "quarantine": query(dsn, "SELECT message_position, safetyreportid, element, reason, raw_xml FROM etl_quarantine ORDER BY 1"),
        "history": query(
            dsn,
            "SELECT file_name, status, messages_total, cases_inserted, cases_updated, cases_skipped_older, cases_nullified,"
            " versions_after_nullification, messages_rejected, row_counts, error FROM etl_file_history ORDER BY 1",
        ),
        "batches": query(dsn, "SELECT * FROM message_batches"),
    }


def versions_file(path: Path) -> Path:
    """60 messages: 20 cases in three versions each, spread over the file (so over every shard), one rejected, one
    nullified, and a version older than the one before it in the file."""
    body = [build_message(CaseSpec(f"CASE-{n % 20:02d}", most_recent_info=f"202401{10 + n // 20:02d}")) for n in range(60)]
    body[44] = body[44].replace('extension="CASE-04" ', "", 1)  # no case identifier: rejected
    body[51] = build_message(CaseSpec("CASE-11", most_recent_info="20240112", nullification=True))
    body[53] = build_message(CaseSpec("CASE-13", most_recent_info="20240105"))  # older than versions before it
    path.parent.mkdir(parents=True, exist_ok=True)
    return write(path, build_batch(body, "BATCH-SPLIT"))


def planned_shards(path: Path, workers: int, mapper: str) -> int:
    """How many workers the run's plan gives the file."""
    sizes = {path.name: path.stat().st_size}
    planner = Planner(sizes, workers, mapper, limits=SPLIT_SMALL_FILES, splittable=lambda _: split.may_split(path))
    return planner.unit((path.name,), in_last_round=True).shards


@pytest.mark.parametrize("shards", [2, 3])
def test_a_split_file_loads_exactly_as_the_whole_file(dsn: str, tmp_path: Path, compiled_mapper: str, shards: int) -> None:
    path = versions_file(tmp_path / "in" / "big.xml")
    assert split.layout_of(path, shards) is not None  # so each shard parses only its range
    assert planned_shards(path, shards, compiled_mapper) == shards

    summary = run_load(path, dsn, workers=shards, mapper=compiled_mapper, limits=SPLIT_SMALL_FILES)
    assert not summary.failures and summary.totals()["messages_rejected"] == 1
    as_split = loaded(dsn)

    whole = run_load(path, dsn, mode="full", workers=1, mapper=compiled_mapper, limits=IN_ONE_PIECE)

    assert not whole.failures
    assert loaded(dsn) == as_split
    assert [position for _, _, position in as_split["audit"]] == [n for n in range(1, 61) if n != 45]  # type: ignore[index]
    assert [row[:3] for row in as_split["quarantine"]] == [(45, None, "C.1.1")]  # type: ignore[index]


def test_a_split_that_a_shard_cannot_read_is_loaded_in_one_piece(dsn: str, tmp_path: Path, compiled_mapper: str) -> None:
    path = versions_file(tmp_path / "in" / "big.xml")
    (tmp_path / "other").mkdir()
    other = write(tmp_path / "other" / "other.xml", path.read_text().replace("CASE-", "OTHER-"))
    write(path, path.read_text()[:-120])  # the trailing header cut short: every shard fails on it, the whole file loads partially
    assert split.layout_of(path, 2) is not None and planned_shards(path, 2, compiled_mapper) == 2
    assert not run_load(other, dsn, workers=1, mapper=compiled_mapper).failures

    # A full reload: the load in one piece, after the shards failed, still empties the tables first
    summary = run_load(path, dsn, mode="full", workers=2, mapper=compiled_mapper, limits=SPLIT_SMALL_FILES)

    assert [outcome.status for outcome in summary.outcomes] == ["partial"] and not summary.failures
    as_split = loaded(dsn)
    run_load(path, dsn, mode="full", workers=1, mapper=compiled_mapper, limits=IN_ONE_PIECE)
    assert loaded(dsn) == as_split
    assert query(dsn, "SELECT COUNT(*) FROM icsr_master WHERE safetyreportid LIKE 'OTHER-%'") == [(0,)]
    assert query(dsn, "SELECT file_name, status FROM etl_file_history") == [("big.xml", "partial")]


def test_random_cut_points_never_fall_inside_a_message(tmp_path: Path) -> None:
    rng = random.Random(4)
    body = [build_message(CaseSpec(f"R-{n}", padding_paragraphs=rng.randint(0, 30)), with_comments=True) for n in range(30)]
    path = write(tmp_path / "uneven.xml", build_batch(body))
    for shards in range(2, 9):
        layout = split.layout_of(path, shards, SMALLEST_CHUNK)
        assert layout is not None
        assert read_pieces(path, layout) == read_whole(path)


@pytest.mark.parametrize("mapper", ["compiled", "python"])
def test_a_file_the_scan_cannot_cut_loads_as_the_whole_file(dsn: str, tmp_path: Path, mapper: str, request) -> None:  # type: ignore[no-untyped-def]
    if mapper == "compiled":
        request.getfixturevalue("compiled_mapper")
    path = versions_file(tmp_path / "in" / "big.xml")
    write(path, path.read_text().replace(f"</{NAME}>\n", f"</{NAME}><![CDATA[ ]]>", 1))  # character data between two messages
    assert split.may_split(path) and split.layout_of(path, 2) is None
    assert planned_shards(path, 2, mapper) == 2

    # Compiled: shard 0 stages it all; Python: each shard parses it whole, maps every other message
    summary = run_load(path, dsn, workers=2, mapper=mapper, limits=SPLIT_SMALL_FILES)
    assert summary.totals()["messages_total"] == 60
    as_shards = loaded(dsn)
    run_load(path, dsn, mode="full", workers=1, mapper=mapper, limits=IN_ONE_PIECE)
    assert loaded(dsn) == as_shards


def test_a_gzip_file_is_not_sharded_with_the_compiled_mapper(sqlite_dsn: str, tmp_path: Path, compiled_mapper: str) -> None:
    path = write(tmp_path / "big.xml.gz", gzip.compress(versions_file(tmp_path / "plain" / "big.xml").read_bytes()))
    assert planned_shards(path, 2, compiled_mapper) == 1  # its shards would each decompress and parse it all

    summary = run_load(path, sqlite_dsn, workers=2, mapper=compiled_mapper, limits=SPLIT_SMALL_FILES)

    assert summary.totals()["messages_total"] == 60

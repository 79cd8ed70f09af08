"""The reference staging core: the Python mapper's rows, written as staged binary COPY tuples.

A staging core turns messages into staged rows and keeps the batch's index. There are two: this one,
and the compiled one (``mapping/_core.pyx``), which walks lxml's tree in C and writes the same bytes.
Both keep each table's rows in a buffer that the batch writer empties into the table's file.
"""

from __future__ import annotations

import copy
from typing import Any

from lxml import etree

from py_load_eudravigilance.mapping.catalog import AUDIT_LOG, MASTER_TAIL, Fact, staged_column_facts, staged_facts
from py_load_eudravigilance.mapping.dictionary import BATCH_HEADER
from py_load_eudravigilance.mapping.mapper import CaseMapper
from py_load_eudravigilance.schema import AUDIT_TABLE, CASE_TABLE_NAMES
from py_load_eudravigilance.staging.copybinary import encode_row
from py_load_eudravigilance.staging.layout import INDEXED_TABLES, STAGED_COLUMNS, STAGED_FAMILIES, STAGED_TABLES, MessageKey, StagedMessages

# The staged master tail and audit row as the catalog declares them: column (or position) -> message fact
MASTER_TAIL_FACTS = {column.name: fact for column, fact in staged_column_facts(MASTER_TAIL)}
AUDIT_FACTS = staged_facts(AUDIT_LOG.columns)
VERSION_COUNT = STAGED_COLUMNS["icsr_master"].index(next(name for name, fact in MASTER_TAIL_FACTS.items() if fact is Fact.VERSION_COUNT))


def audit_payload(message: etree._Element) -> bytes:
    """The message as received: every element, attribute and text node, with the namespaces it uses.

    tostring() of the message in its batch would declare on it every namespace the batch root declares
    (thousands, if the sender wants), in an order that depends on which the message element uses. A copy
    of the message declares, after the message's own declarations, only the namespaces its elements and
    attributes use, in order of first use; the compiled core writes the same bytes.
    """
    if message.getparent() is None:  # a file holding one bare message: nothing declared around it
        return etree.tostring(message, encoding="UTF-8", with_tail=False)
    return etree.tostring(copy.deepcopy(message), encoding="UTF-8", with_tail=False)


class ReferenceCore:
    """Stages messages with :class:`CaseMapper`; what the compiled core must equal."""

    name = "python"

    def __init__(self, mapper: CaseMapper | None = None) -> None:
        self.mapper = mapper or CaseMapper()
        self.buffers = {table: bytearray() for table in STAGED_TABLES}
        self.row_counts = dict.fromkeys(STAGED_TABLES, 0)  # rows staged so far, by table
        self.begin_part()

    def begin_part(self) -> None:
        """Start a new batch: offsets from zero, an empty index."""
        self.taken = dict.fromkeys(STAGED_TABLES, 0)
        self.index = StagedMessages()

    def begin_file(self, name: str, sha256: str) -> None:
        self.file_name, self.file_sha256 = name, sha256
        self.ordinal = len(self.index.files)
        self.index.files.append((name, sha256))

    def stage_message(self, message: etree._Element, position: int) -> None:
        """Append the message's rows, its audit row and its index entry; on a MappingError, nothing."""
        case = self.mapper.map_message(message, position)
        facts: dict[Fact, Any] = {
            Fact.CASE_ID: case.safetyreportid,
            Fact.FILE_SHA256: self.file_sha256,
            Fact.FILE_NAME: self.file_name,
            Fact.POSITION: position,
            Fact.MOST_RECENT_INFO: case.most_recent_info_utc,
            Fact.CREATION_TIME: case.message_creation_utc,
            Fact.IS_NULLIFICATION: case.is_nullification,
            Fact.VERSION_COUNT: None,
        }
        master = case.rows["icsr_master"][0]
        master.update({column: facts[fact] for column, fact in MASTER_TAIL_FACTS.items()})
        counts = {}
        for table in CASE_TABLE_NAMES:
            rows = case.rows.get(table)
            if rows:
                counts[table] = len(rows)
                self.row_counts[table] += len(rows)
                columns, families, buffer = STAGED_COLUMNS[table], STAGED_FAMILIES[table], self.buffers[table]
                if table == "icsr_master":  # where the loader will write the version count
                    values = [master.get(column) for column in columns]
                    before = encode_row(values[:VERSION_COUNT], families[:VERSION_COUNT])
                    self.index.version_count_at.append(self.taken[table] + len(buffer) + len(before))
                for row in rows:
                    buffer += encode_row([row.get(column) for column in columns], families)
        facts[Fact.ROW_COUNTS] = counts
        facts[Fact.PAYLOAD] = audit_payload(message)
        self.buffers[AUDIT_TABLE] += encode_row([facts[fact] for fact in AUDIT_FACTS], STAGED_FAMILIES[AUDIT_TABLE])
        self.row_counts[AUDIT_TABLE] += 1
        utc = case.most_recent_info_utc.isoformat()
        created = case.message_creation_utc.isoformat() if case.message_creation_utc else None
        self.index.keys.append(MessageKey(self.ordinal, position, case.safetyreportid, utc, created, case.is_nullification))
        self.index.bounds.extend(self.taken[table] + len(self.buffers[table]) for table in INDEXED_TABLES)

    def stage_batch_header(self, root: etree._Element) -> None:
        """The file's N.1 batch wrapper, read from the root once its messages were streamed."""
        header = self.mapper.map_batch_header(root)
        header.update(file_sha256=self.file_sha256, file_name=self.file_name)
        self.append(BATCH_HEADER.name, header)

    def append(self, table: str, row: dict[str, Any]) -> None:
        """A bookkeeping row (quarantine, batch header) in the table's staged columns."""
        self.buffers[table] += encode_row([row.get(column) for column in STAGED_COLUMNS[table]], STAGED_FAMILIES[table])
        self.row_counts[table] += 1

    def buffered(self) -> int:
        return sum(len(buffer) for buffer in self.buffers.values())

    def take(self) -> dict[str, bytes]:
        """The rows buffered since the last call, by table; the buffers are emptied."""
        taken = {}
        for table, buffer in self.buffers.items():
            if buffer:
                taken[table] = bytes(buffer)
                self.taken[table] += len(buffer)
                buffer.clear()
        return taken

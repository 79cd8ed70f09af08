"""Fuzzing the parser and mapping: any exception other than the project's own error types is a bug.

Runs a short campaign in the suite; a developer runs a long one with, for example,
``FUZZ_EXAMPLES=20000 .venv/bin/python -m pytest tests/test_fuzz.py``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from py_load_eudravigilance.fixtures.generator import CaseSpec, DrugSpec, ReactionSpec, build_batch, build_message, single_message_file
from py_load_eudravigilance.staging import stage_file

SEEDS = [
    build_batch(
        [
            build_message(CaseSpec("FUZZ-1", reactions=[ReactionSpec(), ReactionSpec(death=None)], drugs=[DrugSpec(), DrugSpec(role="2")])),
            build_message(CaseSpec("FUZZ-2", sex=None, nullification=True), with_comments=True),
        ]
    ).encode(),
    single_message_file(CaseSpec("FUZZ-3", most_recent_info="20240115093000.123+0530")).encode(),
]
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "60"))


@st.composite
def mutated_documents(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        where = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "delete", "insert", "duplicate", "truncate", "swap-value"]))
        if action == "flip":
            data[where] = draw(st.integers(0, 255))
        elif action == "delete":
            del data[where : where + draw(st.integers(1, 200))]
        elif action == "insert":
            data[where:where] = draw(st.binary(min_size=1, max_size=40))
        elif action == "duplicate":
            data[where:where] = data[where : where + draw(st.integers(1, 2000))]
        elif action == "truncate":
            del data[where:]
        else:  # replace an attribute value with arbitrary text: dates, codes and booleans get odd input
            start = data.find(b'value="', where)
            if start != -1:
                end = data.find(b'"', start + 7)
                text = draw(st.text(alphabet=st.characters(blacklist_characters='"<&', blacklist_categories=("Cs",)), max_size=30))
                data[start + 7 : end] = text.encode("utf-8")
        if not data:
            break
    return bytes(data)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(mutated_documents())
def test_mutated_files_fail_only_with_clear_errors(document: bytes) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "fuzzed.xml"
        path.write_bytes(document)
        staged = stage_file(path, Path(scratch) / "stage").files[0]  # anything but the project's errors escapes and fails
    assert staged.messages_rejected <= staged.messages_total
    if staged.error:
        assert staged.error and not staged.error.startswith("file ")  # the file's outcome names the file, once

"""The compiled mapper writes exactly the bytes the Python mapper writes: every table, the index, the quarantine.

Differential tests over generated corpora of several seeds and shapes, the FDA examples when
``../shared`` is present, fuzzed documents and crafted odd values. Under ``CI=true`` (and in
cibuildwheel's wheel tests) a missing or broken build fails instead of skipping, so CI always
exercises the compiled path.
"""

from __future__ import annotations

import os
import pickle
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from lxml import etree

from py_load_eudravigilance.fixtures.generator import (
    CaseSpec,
    CorpusSpec,
    DrugSpec,
    ReactionSpec,
    build_batch,
    build_message,
    single_message_file,
    write_corpus,
)
from py_load_eudravigilance.mapping.catalog import AUDIT_LOG, MASTER_TAIL
from py_load_eudravigilance.mapping.mapper import NO_CASE_ID, NO_MOST_RECENT
from py_load_eudravigilance.schema import AUDIT_TABLE, QUARANTINE_TABLE
from py_load_eudravigilance.staging import cores, stage_file
from py_load_eudravigilance.staging.cores import (
    CompiledCoreMismatch,
    CompiledCoreUnavailable,
    chosen_mapper,
    compiled_core_problem,
    create_core,
)
from py_load_eudravigilance.staging.layout import INDEX_FILE, STAGED_TABLES, table_file
from tests.conftest import SHARED_E2B
from tests.test_fuzz import mutated_documents
from tests.test_parsing_mapping import staged_rows

MUST_BE_BUILT = os.environ.get("CI") == "true" or os.environ.get("CIBUILDWHEEL") == "1"


@pytest.fixture(scope="module", autouse=True)
def compiled_core_built() -> None:
    problem = compiled_core_problem()
    if problem is None:
        return
    if MUST_BE_BUILT:
        pytest.fail(f"CI must build and run the compiled mapper: {problem}")
    pytest.skip(problem)


def staged(path: Path, directory: Path, kind: str) -> dict[str, object]:
    """Everything staging ``path`` with one core produced: each table's bytes, the index, the file's account."""
    group = stage_file(path, directory, core=create_core(kind))
    (account,) = group.files
    with (directory / INDEX_FILE).open("rb") as handle:
        index = pickle.load(handle)
    tables = {table: table_file(directory, table).read_bytes() for table in STAGED_TABLES if table_file(directory, table).exists()}
    return {"tables": tables, "index": index, "account": account}


def assert_same_staging(path: Path, scratch: Path) -> dict[str, object]:
    reference = staged(path, scratch / "python", "python")
    compiled = staged(path, scratch / "compiled", "compiled")
    for table in sorted(set(reference["tables"]) | set(compiled["tables"])):  # type: ignore[arg-type]
        expected, actual = reference["tables"].get(table, b""), compiled["tables"].get(table, b"")  # type: ignore[union-attr]
        if expected != actual:
            for number, (a, b) in enumerate(zip(expected.splitlines(), actual.splitlines(), strict=False)):
                assert a == b, f"{path.name}: {table} row {number + 1} differs"
            assert expected == actual, f"{path.name}: {table} differs in length"
    assert reference["index"] == compiled["index"]
    assert reference["account"].__dict__ | {"parse_seconds": 0} == compiled["account"].__dict__ | {"parse_seconds": 0}  # type: ignore[attr-defined]
    return reference


@pytest.mark.parametrize(
    "spec",
    [
        CorpusSpec(files=2, cases_per_file=40, seed=1),
        CorpusSpec(files=2, cases_per_file=40, seed=2, follow_up_fraction=0.6),
        CorpusSpec(files=1, cases_per_file=60, seed=3, follow_up_fraction=0.0),
        CorpusSpec(files=1, cases_per_file=30, seed=4, follow_up_fraction=0.9),
    ],
    ids=lambda spec: f"seed{spec.seed}",
)
def test_generated_corpora_stage_identically(spec: CorpusSpec, tmp_path: Path) -> None:
    for number, path in enumerate(write_corpus(tmp_path / "in", spec)):
        reference = assert_same_staging(path, tmp_path / f"out-{number}")
        assert reference["tables"]["icsr_master"]  # type: ignore[index]


def rich_case(rng: random.Random, number: int) -> CaseSpec:
    """Shapes the corpus generator does not make: many repeats, padding, deaths sent as nullFlavor, every role."""
    reactions = [ReactionSpec(xml_id=f"r-{number}-{i}", death=rng.choice([True, False, None])) for i in range(rng.randint(1, 6))]
    drugs = [
        DrugSpec(
            xml_id=f"d-{number}-{i}", role=rng.choice("1234"), assessments=tuple(rng.choice(["Related", "Unlikely"]) for _ in reactions)
        )
        for i in range(rng.randint(1, 5))
    ]
    return CaseSpec(
        f"RICH-{number:04d}",
        reactions=reactions,
        drugs=drugs,
        sex=rng.choice(["1", "2", None]),
        nullification=rng.random() < 0.1,
        most_recent_info=rng.choice(["20240115", "202401151230", "20240115123045.5+0130", "20231231235959-1200"]),
        padding_paragraphs=rng.choice([0, 3]),
    )


@pytest.mark.parametrize("seed", [11, 12])
def test_rich_and_single_message_files_stage_identically(seed: int, tmp_path: Path) -> None:
    rng = random.Random(seed)
    batch = tmp_path / "rich.xml"
    batch.write_text(build_batch([build_message(rich_case(rng, n), with_comments=n % 2 == 0) for n in range(40)]), encoding="utf-8")
    assert_same_staging(batch, tmp_path / "batch")
    single = tmp_path / "single.xml"
    single.write_text(single_message_file(rich_case(rng, 99)), encoding="utf-8")
    assert_same_staging(single, tmp_path / "single")


# Values each conversion's fast path in C must either get right or hand to Python
ODD_VALUES = {
    "dates": [
        "20240115",
        " 20240115 ",
        "2024011",
        "20240230",
        "00010101000000+0100",
        "99991231235959-0100",
        "2024.5",
        "2024011512.123456",
        "2024011512.1234567",
        "20240115+2400",
        "２０２４０１１５",
        "20240115120000+0000",
        "19991231",
    ],
    "numbers": ["45", " 45 ", "4.5e1", "1_000", "inf", "nan", "-0", ".5", "5.", "1e400", "abc", "", "٤٥", "+7"],
    "booleans": ["true", "TRUE", "tRuE", " 1 ", "0", "false", "yes", "ＴＲＵＥ"],
    "codes": ["1", " 1 ", "1\t", "a  b", "   "],
}


def odd_message(number: int, date: str, age: str, death: str, sex: str) -> str:
    message = build_message(CaseSpec(f"ODD-{number}", age="45", sex="1"))
    message = message.replace('<availabilityTime value="20240115"/>', f'<availabilityTime value="{date}"/>', 1)
    message = message.replace('value="45" unit="a"', f'value="{age}" unit="a"', 1)
    message = message.replace('<value xsi:type="BL" value="false"/>', f'<value xsi:type="BL" value="{death}"/>', 1)
    return message.replace('<administrativeGenderCode code="1"', f'<administrativeGenderCode code="{sex}"', 1)


def test_odd_values_stage_identically_or_are_rejected_identically(tmp_path: Path) -> None:
    messages = []
    for number, date in enumerate(ODD_VALUES["dates"]):
        values = [ODD_VALUES[kind][number % len(ODD_VALUES[kind])] for kind in ("numbers", "booleans", "codes")]
        messages.append(odd_message(number, date, *values))
    for number, age in enumerate(ODD_VALUES["numbers"]):
        messages.append(odd_message(100 + number, "20240115", age, "true", "2"))
    path = tmp_path / "odd.xml"
    path.write_text(build_batch(messages), encoding="utf-8")
    reference = assert_same_staging(path, tmp_path / "odd")
    assert 0 < reference["account"].messages_rejected < len(messages)  # type: ignore[attr-defined]


def test_case_ids_at_the_length_limits_stage_or_are_rejected_identically(tmp_path: Path) -> None:
    # 500 characters and 1,000 bytes of UTF-8 are the limits; the compiled core asks the rule only past 500 bytes
    ids = ["A" * 500, "A" * 501, "\u6771" * 333, "\u6771" * 334, "\U0001f600" * 250, "\U0001f600" * 251]
    path = tmp_path / "long-ids.xml"
    path.write_text(build_batch([build_message(CaseSpec(case_id)) for case_id in ids]), encoding="utf-8")
    reference = assert_same_staging(path, tmp_path / "long-ids")
    assert reference["account"].messages_rejected == 3  # type: ignore[attr-defined]


def test_messages_without_a_required_value_are_rejected_identically(tmp_path: Path) -> None:
    without_case_id = build_message(CaseSpec("NOID-1")).replace(
        'extension="NOID-1" root="2.16.840.1.113883.3.989.2.1.3.1"', 'root="2.16.840.1.113883.3.989.2.1.3.1"', 1
    )
    without_date = build_message(CaseSpec("NODATE-1")).replace('<availabilityTime value="20240115"/>', "", 1)
    messages = [without_case_id, without_date, build_message(CaseSpec("NULLIFIED-1", nullification=True))]
    path = tmp_path / "required.xml"
    path.write_text(build_batch(messages), encoding="utf-8")
    reference = assert_same_staging(path, tmp_path / "required")
    assert {AUDIT_TABLE, QUARANTINE_TABLE} <= set(reference["tables"])  # type: ignore[arg-type]  # both compared, byte for byte
    account = reference["account"]
    assert [(r[2], r[3]) for r in account.rejections] == [  # type: ignore[attr-defined]
        (NO_CASE_ID.element, NO_CASE_ID.reason),
        (NO_MOST_RECENT.element, NO_MOST_RECENT.reason),
    ]


def test_awkward_text_stages_identically(tmp_path: Path) -> None:
    awkward = "tab\there \\. back\\slash\r\nCRLF\n\\.\n  \u00a0\u2003spaces\u3000 \u6771\u4eac \U0001f600"
    case = CaseSpec("AWK\\.\t1", narrative=awkward, reactions=[ReactionSpec(term=awkward)], drugs=[DrugSpec(name=f" {awkward} ")])
    path = tmp_path / "awkward.xml"
    path.write_text(build_batch([build_message(case)]), encoding="utf-8")
    assert_same_staging(path, tmp_path / "awkward")


@pytest.mark.skipif(not (SHARED_E2B / "fda-examples").exists(), reason="needs ../shared/e2b (FDA example instances)")
def test_fda_examples_stage_identically(tmp_path: Path) -> None:
    for number, path in enumerate(sorted((SHARED_E2B / "fda-examples").glob("*.xml"))):
        assert_same_staging(path, tmp_path / str(number))


@settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "40")), deadline=None, suppress_health_check=list(HealthCheck))
@given(mutated_documents())
def test_fuzzed_documents_stage_identically(tmp_path_factory: pytest.TempPathFactory, document: bytes) -> None:
    scratch = tmp_path_factory.mktemp("fuzz")
    path = scratch / "fuzz.xml"
    path.write_bytes(document)
    assert_same_staging(path, scratch)


def test_c_strip_is_python_strip() -> None:
    from py_load_eudravigilance.mapping import _core  # type: ignore[attr-defined]

    for code in range(0, 0x3100):
        if 0xD800 <= code < 0xE000:
            continue
        text = f"{chr(code)}x{chr(code)}"
        assert _core.python_strip(text.encode()) == text.strip().encode(), hex(code)


def test_the_compiled_mapper_is_chosen_when_built_and_the_setting_forces_python(monkeypatch: pytest.MonkeyPatch) -> None:
    assert chosen_mapper() == "compiled"
    monkeypatch.setenv("PY_LOAD_EUDRAVIGILANCE_MAPPER", "python")
    assert chosen_mapper() == "python" and create_core().name == "python"
    assert chosen_mapper("compiled") == "compiled"
    with pytest.raises(ValueError, match="must be one of"):
        chosen_mapper("fast")


GENERATED_DOSAGE_TIME = (
    '<effectiveTime xsi:type="SXPR_TS"><comp xsi:type="PIVL_TS"><period value="1" unit="d"/></comp>'
    '<comp xsi:type="IVL_TS" operator="A"><low value="20231220"/><high value="20240102"/></comp></effectiveTime>'
)


def with_dosage_time(case_id: str, effective_time: str) -> str:
    message = build_message(CaseSpec(case_id))
    assert GENERATED_DOSAGE_TIME in message
    return message.replace(GENERATED_DOSAGE_TIME, effective_time, 1)


def test_unions_select_in_document_order_whatever_the_order_of_their_parts(tmp_path: Path) -> None:
    """G.k.4.r.4/5 are ``(effectiveTime[low] | effectiveTime/comp[low])/low``: the first low in document order."""
    many_comps = "".join(f'<comp xsi:type="IVL_TS"><low value="{2001 + n}"/><high value="{2001 + n}"/></comp>' for n in range(20))
    shapes = {
        "comp-first": '<effectiveTime xsi:type="SXPR_TS"><comp xsi:type="IVL_TS"><low value="2020"/><high value="2020"/></comp>'
        '<low value="2021"/><high value="2021"/></effectiveTime>',
        "own-first": '<effectiveTime xsi:type="SXPR_TS"><low value="2020"/><high value="2020"/>'
        '<comp xsi:type="IVL_TS"><low value="2021"/><high value="2021"/></comp></effectiveTime>',
        "many-comps": f'<effectiveTime xsi:type="SXPR_TS">{many_comps}<low value="2021"/><high value="2021"/></effectiveTime>',
        "two-times": '<effectiveTime xsi:type="SXPR_TS"><comp xsi:type="IVL_TS"><low value="2020"/><high value="2020"/></comp>'
        '</effectiveTime><effectiveTime xsi:type="IVL_TS"><low value="2021"/><high value="2021"/></effectiveTime>',
    }
    path = tmp_path / "unions.xml"
    path.write_text(build_batch([with_dosage_time(name, time) for name, time in shapes.items()]), encoding="utf-8")

    assert_same_staging(path, tmp_path / "staged")

    dosages = staged_rows(tmp_path / "staged" / "compiled", "drug_dosages")
    assert [(row["start_date"], row["last_administration_date"]) for row in dosages] == [
        ("2020", "2020"),
        ("2020", "2020"),
        ("2001", "2001"),
        ("2020", "2020"),
    ]


HL7_AND_XSI = 'xmlns="urn:hl7-org:v3" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'


@pytest.mark.parametrize(
    "declarations",
    [
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns="urn:hl7-org:v3"',  # xsi first
        HL7_AND_XSI + "".join(f' xmlns:n{n}="urn:example:n{n}"' for n in range(20000)),  # thousands nobody uses
        'xmlns:x="urn:example:x" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns="urn:hl7-org:v3" xmlns:unused="urn:u"',
    ],
    ids=["xsi-first", "20000-declarations", "foreign-prefix"],
)
def test_audit_payloads_declare_only_the_namespaces_the_message_uses(declarations: str, tmp_path: Path) -> None:
    foreign = build_message(CaseSpec("NS-2")).replace("<PORR_IN049016UV>", '<PORR_IN049016UV xmlns:own="urn:example:own">', 1)
    foreign = foreign.replace('<processingCode code="P"/>', '<processingCode code="P" x:flag="1"/><x:extension/>', 1)
    messages = [build_message(CaseSpec("NS-1")), foreign if "xmlns:x=" in declarations else build_message(CaseSpec("NS-2"))]
    path = tmp_path / "namespaces.xml"
    path.write_text(build_batch(messages).replace(HL7_AND_XSI, declarations, 1), encoding="utf-8")

    assert_same_staging(path, tmp_path / "staged")

    payloads = [row["payload"] for row in staged_rows(tmp_path / "staged" / "compiled", "icsr_audit_log")]
    assert payloads[0].startswith(f"<PORR_IN049016UV {HL7_AND_XSI}>")  # the message's own, in order of first use
    if "xmlns:x=" in declarations:  # its own declaration first, then those of the batch root it uses (x:flag before xsi:type)
        assert payloads[1].startswith(
            '<PORR_IN049016UV xmlns:own="urn:example:own" xmlns="urn:hl7-org:v3" xmlns:x="urn:example:x" '
            'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        )
    assert all("urn:example:n" not in payload and "urn:u" not in payload for payload in payloads)
    for payload in payloads:
        etree.fromstring(payload.encode())  # it parses on its own


@pytest.fixture
def fresh_core_choice() -> Iterator[None]:
    """The plan, the self-test and the warning are worked out once per process: again in the test, and again after it."""
    from py_load_eudravigilance.staging import compiled

    def forget() -> None:
        compiled.build_plan.cache_clear()
        cores._compiled_core_state.cache_clear()
        cores._warn_once.cache_clear()

    forget()
    yield
    forget()


def test_a_fact_the_compiled_core_does_not_write_is_a_plan_mismatch_naming_the_column(monkeypatch: pytest.MonkeyPatch) -> None:
    from py_load_eudravigilance.mapping import _core  # type: ignore[attr-defined]
    from py_load_eudravigilance.staging.compiled import PlanMismatch, fact_codes

    assert len(fact_codes(AUDIT_LOG.name, AUDIT_LOG.columns)) == len(AUDIT_LOG.staged_columns())
    assert len(fact_codes("icsr_master", MASTER_TAIL)) == sum(c.staged for c in MASTER_TAIL)
    code, _ = _core.MESSAGE_FACTS["position"]
    monkeypatch.setitem(_core.MESSAGE_FACTS, "position", (code, "text"))
    with pytest.raises(PlanMismatch, match=r"icsr_audit_log\.message_position is integer, but the compiled core writes 'position' as text"):
        fact_codes(AUDIT_LOG.name, AUDIT_LOG.columns)
    monkeypatch.setitem(_core.MESSAGE_FACTS, "position", (code, "integer"))
    monkeypatch.delitem(_core.MESSAGE_FACTS, "payload")
    with pytest.raises(PlanMismatch, match=r"writes no message fact 'payload', which fills icsr_audit_log\.payload"):
        fact_codes(AUDIT_LOG.name, AUDIT_LOG.columns)


@pytest.mark.usefixtures("fresh_core_choice")
def test_auto_falls_back_loudly_when_the_compiled_core_does_not_match_the_catalog(monkeypatch: pytest.MonkeyPatch) -> None:
    from py_load_eudravigilance.mapping import _core  # type: ignore[attr-defined]

    monkeypatch.delitem(_core.MESSAGE_FACTS, "payload")  # as a core built from older sources would lack it
    with pytest.warns(CompiledCoreMismatch, match=r"icsr_audit_log\.payload.*several times slower"):
        assert chosen_mapper("auto") == "python"
    assert create_core("auto").name == "python"
    with pytest.raises(CompiledCoreUnavailable, match="does not match this release's catalog"):
        chosen_mapper("compiled")

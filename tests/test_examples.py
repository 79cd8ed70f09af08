"""The sample files of examples/: what each one shows happens when they are loaded, and they are up to date.

They are written by this module (``.venv/bin/python -m tests.test_examples`` from the checkout writes
them again): E2B(R3) files from the project's generator, and the synthetic MedDRA release of the tests.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

from py_load_eudravigilance.fixtures.generator import CaseSpec, DrugSpec, ReactionSpec, build_batch, build_message, standalone_message
from tests.support.db import query
from tests.support.meddra import write_release
from tests.test_cli import run_cli

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
E2B_FOLDER = EXAMPLES / "e2b"
MEDDRA_FOLDER = EXAMPLES / "meddra"
MEDDRA_VERSION = "26.1"  # the version the generator codes reactions with


def _id(name: str) -> str:
    """A fixed XML id (reactions and drugs are referred to by id): the files stay byte for byte the same."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"eudravigloader-example:{name}"))


def _case(case_id: str, day: str, reactions: list[tuple[str, str]], drugs: list[tuple[str, str, str]], **extra: object) -> CaseSpec:
    return CaseSpec(
        case_id,
        most_recent_info=day,
        first_received="20240201",
        message_created=f"{day}100000+0100",
        reactions=[ReactionSpec(code, term, xml_id=_id(f"{case_id}-{day}-{code}")) for code, term in reactions],
        drugs=[DrugSpec(name, substance, role=role, xml_id=_id(f"{case_id}-{day}-{name}")) for name, substance, role in drugs],
        **extra,  # type: ignore[arg-type]
    )


def example_files() -> dict[str, str]:
    """Each E2B(R3) example: its path under examples/ and its content."""
    first = _case("EU-EX-0001", "20240205", [("10019211", "Headache"), ("10028813", "Nausea")], [("Paracetamol", "PARACETAMOL", "1")])
    second = _case("EU-EX-0002", "20240206", [("10037660", "Pyrexia")], [("Amoxicillin", "AMOXICILLIN", "1")])
    literature = _case(
        "EU-EX-0003",
        "20240210",
        [("10040785", "Skin reaction")],
        [("Ibuprofen", "IBUPROFEN", "1")],
        literature=("Example A, Sample B. Cutaneous reactions to ibuprofen: a case report. J Drug Saf. 2024;12:34-36.",),
    )
    # The follow-up withdraws nausea, reports dyspnoea and a concomitant drug: the case's rows are replaced
    follow_up = _case(
        "EU-EX-0001",
        "20240305",
        [("10019211", "Headache"), ("10013968", "Dyspnoea")],
        [("Paracetamol", "PARACETAMOL", "1"), ("Warfarin", "WARFARIN", "2")],
    )
    nullification = _case(
        "EU-EX-0002", "20240307", [("10037660", "Pyrexia")], [("Amoxicillin", "AMOXICILLIN", "1")], nullification=True
    )
    # A version sent after the nullification, however new, does not bring the case back
    after_nullification = _case("EU-EX-0002", "20240320", [("10037660", "Pyrexia")], [("Amoxicillin", "AMOXICILLIN", "1")])
    valid = _case("EU-EX-0004", "20240321", [("10047700", "Vomiting")], [("Paracetamol", "PARACETAMOL", "1")])
    rejected = _case("EU-EX-0005", "2024-03-21", [("10012735", "Diarrhoea")], [("Ibuprofen", "IBUPROFEN", "1")])  # C.1.5 not an HL7 date
    rejected.message_created = "20240321100000+0100"

    def batch(number: str, *cases: CaseSpec) -> str:
        return build_batch([build_message(case) for case in cases], f"EX-BATCH-{number}", cases[0].message_created)

    return {
        "e2b/01-initial-reports.xml": batch("01", first, second),
        "e2b/02-literature-case.xml": standalone_message(build_message(literature)),
        "e2b/03-follow-up.xml": batch("03", follow_up),
        "e2b/04-nullification.xml": batch("04", nullification),
        "e2b/05-rejected-message.xml": batch("05", after_nullification, valid, rejected),
    }


def write_examples(root: Path) -> None:
    for name, content in example_files().items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(content, encoding="utf-8")
    write_release(root / "meddra", MEDDRA_VERSION)


def test_the_examples_are_up_to_date(tmp_path: Path) -> None:
    write_examples(tmp_path)
    fresh = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    committed = sorted(p.relative_to(EXAMPLES) for p in (*E2B_FOLDER.rglob("*"), *MEDDRA_FOLDER.rglob("*")) if p.is_file())
    again = "write it again with `.venv/bin/python -m tests.test_examples`"
    assert fresh == committed, f"examples/ is stale: {again}"
    for name in fresh:
        assert (tmp_path / name).read_bytes() == (EXAMPLES / name).read_bytes(), f"{name} is stale: {again}"
    assert all(path.stat().st_size < 32_000 for path in E2B_FOLDER.iterdir())  # small enough to read


def test_the_examples_load_as_the_readme_says(tmp_path: Path) -> None:
    dsn = f"sqlite:///{tmp_path / 'examples.db'}"
    assert run_cli("init-db", "--dsn", dsn).returncode == 0

    loaded = run_cli("run", str(E2B_FOLDER), "--dsn", dsn, "--workers", "1")
    meddra = run_cli("meddra", "load", str(MEDDRA_FOLDER), "--dsn", dsn)

    assert loaded.returncode == 2, loaded.stdout + loaded.stderr  # partial: the rejected message, on purpose
    assert "files: 5 found, 0 skipped (already loaded), 4 completed, 1 partial, 0 failed" in loaded.stdout
    # 4 cases; the follow-up and the nullification update theirs; the version after the nullification is not applied
    assert "cases: 4 inserted, 2 updated, 0 skipped as older, 1 nullified, 1 newer versions of nullified cases not applied" in loaded.stdout
    assert "  rejected: message #3, case EU-EX-0005, element C.1.5: not an HL7 date/time (TS): '2024-03-21'" in loaded.stdout
    assert query(dsn, "SELECT safetyreportid, element FROM etl_quarantine") == [("EU-EX-0005", "C.1.5")]
    # The follow-up replaced the first version's reactions: nausea withdrawn, dyspnoea added
    reactions = "SELECT reaction_meddra_code FROM reactions WHERE safetyreportid = 'EU-EX-0001' ORDER BY 1"
    assert query(dsn, reactions) == [("10013968",), ("10019211",)]
    # The nullification sticks, although a newer version came after it
    assert query(dsn, "SELECT is_nullified FROM icsr_master WHERE safetyreportid = 'EU-EX-0002'") == [(1,)]
    assert query(dsn, "SELECT safetyreportid FROM cases ORDER BY 1") == [("EU-EX-0001",), ("EU-EX-0003",), ("EU-EX-0004",)]
    assert query(dsn, "SELECT COUNT(*) FROM literature_references WHERE safetyreportid = 'EU-EX-0003'") == [(1,)]
    # The synthetic MedDRA release names every reaction's PT and SOC
    assert meddra.returncode == 0 and f"MedDRA {MEDDRA_VERSION} loaded" in meddra.stdout, meddra.stdout + meddra.stderr
    assert query(dsn, "SELECT COUNT(*) FROM case_drug_reactions WHERE soc_name IS NULL") == [(0,)]
    # The screen of one substance names its PTs in the release loaded, with a subgroup and a period
    screened = run_cli("signals", "--dsn", dsn, "--drug", "paracetamol", "--subgroup", "paediatric", "--since", "2024-03-01")
    assert screened.returncode == 0, screened.stderr
    assert f"events: PTs of MedDRA {MEDDRA_VERSION}" in screened.stdout and "| PARACETAMOL | 10019211 | Headache |" in screened.stdout


if __name__ == "__main__":
    write_examples(EXAMPLES)
    sys.stdout.write(f"wrote {', '.join(example_files())} and meddra/ under {EXAMPLES}\n")

"""A tiny MedDRA hierarchy in the MSSO ASCII release format, written by the tests (MedDRA itself is licensed)."""

from __future__ import annotations

from pathlib import Path

# SOC code -> (name, abbreviation)
SOCS = {
    "10029205": ("Nervous system disorders", "Nerv"),
    "10017947": ("Gastrointestinal disorders", "Gastr"),
    "10018065": ("General disorders and administration site conditions", "Genrl"),
    "10040785": ("Skin and subcutaneous tissue disorders", "Skin"),
    "10021428": ("Immune system disorders", "Immun"),
    "10038738": ("Respiratory, thoracic and mediastinal disorders", "Resp"),
}
# PT code -> (name, primary SOC, other SOCs); each PT is also its own LLT, as in MedDRA
PTS = {
    "10019211": ("Headache", "10029205", ()),
    "10028813": ("Nausea", "10017947", ()),
    "10012735": ("Diarrhoea", "10017947", ()),
    "10037660": ("Pyrexia", "10018065", ()),
    "10040785": ("Skin reaction", "10040785", ()),
    "10002198": ("Anaphylactic reaction", "10021428", ("10038738",)),
    "10047700": ("Vomiting", "10017947", ()),
    "10013968": ("Dyspnoea", "10038738", ()),
}
# Lowest level terms that are not PTs: code -> (name, PT)
EXTRA_LLTS = {"10019198": ("Head pain", "10019211")}


def hlt_of(soc: str) -> tuple[str, str]:
    return "2" + soc[1:], f"HLT under {SOCS[soc][0]}"


def hlgt_of(soc: str) -> tuple[str, str]:
    return "3" + soc[1:], f"HLGT under {SOCS[soc][0]}"


def _write(path: Path, rows: list[list[str]]) -> None:
    path.write_text("".join("$".join(row) + "$\n" for row in rows), encoding="utf-8")


def write_release(directory: Path, version: str, pt_names: dict[str, str] | None = None, release_file: bool = True) -> Path:
    """Write the release's files into ``directory/MedAscii``; ``pt_names`` renames PTs (to tell versions apart)."""
    names = {pt: (pt_names or {}).get(pt, name) for pt, (name, _, _) in PTS.items()}
    folder = directory / "MedAscii"
    folder.mkdir(parents=True, exist_ok=True)
    _write(folder / "soc.asc", [[code, name, abbrev, "", "", "", "", "", "", ""] for code, (name, abbrev) in SOCS.items()])
    _write(folder / "hlgt.asc", [[*hlgt_of(soc), "", "", "", "", "", "", ""] for soc in SOCS])
    _write(folder / "hlt.asc", [[*hlt_of(soc), "", "", "", "", "", "", ""] for soc in SOCS])
    _write(folder / "pt.asc", [[pt, names[pt], "", primary, "", "", "", "", "", "", ""] for pt, (_, primary, _) in PTS.items()])
    llts = [[pt, names[pt], pt, "", "", "", "", "", "", "Y", ""] for pt in PTS]
    llts += [[llt, name, pt, "", "", "", "", "", "", "Y", ""] for llt, (name, pt) in EXTRA_LLTS.items()]
    _write(folder / "llt.asc", llts)
    hierarchy = []
    for pt, (_, primary, others) in PTS.items():
        for soc in (primary, *others):
            hlt, hlgt = hlt_of(soc), hlgt_of(soc)
            flag = "Y" if soc == primary else "N"
            hierarchy.append([pt, hlt[0], hlgt[0], soc, names[pt], hlt[1], hlgt[1], SOCS[soc][0], SOCS[soc][1], "", primary, flag])
    _write(folder / "mdhier.asc", hierarchy)
    if release_file:
        _write(folder / "meddra_release.asc", [[version, "English", "", ""]])
    return directory

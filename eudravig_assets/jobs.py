"""Jobs over the table assets: the sensors' load job and the full reload."""

from __future__ import annotations

from dagster import AssetSelection, define_asset_job

from eudravig_assets.assets import LOAD_MODE_TAG, icsr_tables

TABLES = AssetSelection.assets(icsr_tables)

load_icsr_files_job = define_asset_job(
    "load_icsr_files",
    selection=TABLES,
    description="Load a range of file partitions (delta: files already loaded are skipped by hash).",
)

full_reload_job = define_asset_job(
    "full_reload",
    selection=TABLES,
    tags={LOAD_MODE_TAG: "full"},
    description="Empty every table and rebuild it from all files: launch it over the whole partition range, as one run.",
)

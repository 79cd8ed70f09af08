"""Downstream of the tables: an example consumer reading tables back through the loader IO manager.

The input is typed with dagster-pandera from the same pandera schema the asset checks use, so a
table that breaks the data dictionary fails the consumer's type check before any analysis runs.
"""

import warnings

import pandas as pd
from dagster import AssetIn, BetaWarning, MaterializeResult, MetadataValue, asset
from dagster_pandera import pandera_schema_to_dagster_type

from py_load_eudravigilance.quality import table_schema

with warnings.catch_warnings():
    # A beta function of dagster-pandera, chosen knowingly: its warning would print at every import of the project
    warnings.simplefilter("ignore", BetaWarning)
    # Only the columns the counts need are read (each table is read whole), checked by their own rules
    REACTION_COLUMNS = ["safetyreportid", "reaction_meddra_code", "primary_source_reaction"]
    MASTER_COLUMNS = ["safetyreportid", "is_nullified"]
    ReactionsFrame = pandera_schema_to_dagster_type(table_schema("reactions").select_columns(REACTION_COLUMNS))
    MasterFrame = pandera_schema_to_dagster_type(table_schema("icsr_master").select_columns(MASTER_COLUMNS))
TOP_TERMS = 20


@asset(
    ins={
        "reactions": AssetIn(
            "reactions", dagster_type=ReactionsFrame, input_manager_key="loader_io_manager", metadata={"columns": REACTION_COLUMNS}
        ),
        "icsr_master": AssetIn(
            "icsr_master", dagster_type=MasterFrame, input_manager_key="loader_io_manager", metadata={"columns": MASTER_COLUMNS}
        ),
    },
    group_name="analytics",
    description="Most reported reactions (MedDRA LLT codes) over the current version of every case that is not nullified.",
)
def reaction_frequencies(reactions: pd.DataFrame, icsr_master: pd.DataFrame) -> MaterializeResult:
    live = icsr_master.loc[~icsr_master["is_nullified"].fillna(False).astype(bool), "safetyreportid"]
    counted = (
        reactions[reactions["safetyreportid"].isin(live)]
        .groupby(["reaction_meddra_code", "primary_source_reaction"], dropna=False)["safetyreportid"]
        .nunique()
        .sort_values(ascending=False)
        .rename("cases")
        .reset_index()
    )
    return MaterializeResult(
        metadata={
            "cases": len(live),
            "distinct_reaction_codes": int(counted["reaction_meddra_code"].nunique()),
            "top_reactions": MetadataValue.md(counted.head(TOP_TERMS).to_markdown(index=False)),
        }
    )

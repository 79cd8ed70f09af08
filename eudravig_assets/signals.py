"""Signal statistics as an asset: ``drug_event_statistics``, refreshed in the database after every load.

Its automation condition (eager) requests a run of it whenever the case tables it reads have been
materialized; ``signal_statistics_after_loads``, an automation sensor on by default like the
arrival sensors, evaluates it. It can also be materialized from the UI, and ``eudravigloader
signals`` refreshes the same statistics.

A refresh recounts only the cases loaded since the last one, so its reports cover what it changed:
the totals kept with the counts (pairs, n), and the top rows and the check of the pairs whose ``a``
it changed (every pair after a rebuild). The top rows carry subgroup flags for children and the
elderly (EMA's SDR within the subgroup, the lower bound of the relative ROR against the other
cases), read by key from ``drug_event_subgroup_statistics``. Nothing here reads the whole table.
"""

from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetKey,
    AssetSelection,
    AutomationCondition,
    AutomationConditionSensorDefinition,
    Config,
    DefaultSensorStatus,
    MaterializeResult,
    MetadataValue,
    asset,
)

from eudravig_assets.assets import table_metadata
from eudravig_assets.resources import EudravigDatabase
from eudravig_assets.sensors import SENSOR_INTERVAL_SECONDS
from loaders.dialect import dialect_for
from loaders.upkeep import refresh_drug_event_statistics
from py_load_eudravigilance.settings import SignalSettings, load_settings
from py_load_eudravigilance.signals import STATISTICS_TABLE, cells_check_query, changed_statistics, markdown_table, top_pairs
from py_load_eudravigilance.subgroups import GERIATRIC, PAEDIATRIC, screen

SOURCE_TABLES = ("icsr_master", "drugs", "drug_substances", "reactions")
TOP_SIGNALS = 20
# The subgroups the eRMR shows by a relative ROR, and the columns of each the top rows gain (metadata kept small)
FLAGGED_SUBGROUPS = (PAEDIATRIC, GERIATRIC)
SUBGROUP_FLAGS = tuple(f"{column}_{name}" for name in FLAGGED_SUBGROUPS for column in ("ema_sdr", "relative_ror_lower95"))
CELLS_CHECK = "cells_add_up_to_n"
CELLS_CHECK_DESCRIPTION = "The 2x2 table of every pair the refresh changed is whole: a >= 1, no cell below zero, a + b + c + d = n"


class StatisticsConfig(Config):
    """Which G.k.1 drug roles count (default: the ``signals.drug_roles`` setting, suspect and interacting), the MedDRA
    version whose PTs the events are (default: the ``signals.meddra_version`` setting, else the latest loaded), and
    whether to recount every case instead of those loaded since the last refresh."""

    drug_roles: list[str] | None = None
    meddra_version: str | None = None
    rebuild: bool = False


@asset(
    name=STATISTICS_TABLE,
    group_name="analytics",
    deps=[AssetKey(name) for name in SOURCE_TABLES],
    automation_condition=AutomationCondition.eager(),
    check_specs=[AssetCheckSpec(CELLS_CHECK, asset=STATISTICS_TABLE, description=CELLS_CHECK_DESCRIPTION)],
    description=(
        "Drug-event disproportionality (PRR, ROR, chi-square, IC with their intervals, the signal flag and the rules met) "
        "of every active substance and MedDRA PT (with its name) over the current, non-nullified cases; kept up to date "
        "in the database after each load, from the cases it wrote."
    ),
)
def drug_event_statistics(config: StatisticsConfig, database: EudravigDatabase) -> MaterializeResult:
    # Roles given in the run's config are checked as the setting is (G.k.1 codes); none given: the setting
    setting = load_settings().signals
    roles = SignalSettings(drug_roles=config.drug_roles).drug_roles if config.drug_roles is not None else setting.drug_roles
    loader = database.loader()
    summary = refresh_drug_event_statistics(
        loader.engine, roles, config.rebuild, database.db_schema, meddra_version=config.meddra_version or setting.meddra_version
    )
    # The rows of the pairs this refresh changed (of the last refresh, should another one have run since), read by key
    table = database.reader().table
    changed = changed_statistics(table).subquery("changed")
    with loader.engine.begin() as conn:
        if not summary.rebuilt:
            dialect_for(loader.engine).keyed_lookups(conn)
        top = conn.execute(top_pairs(changed, TOP_SIGNALS)).mappings().all()
        # The subgroup statistics of those rows only, by their keys
        top = screen(conn, table, top, FLAGGED_SUBGROUPS, None)
        rows, failing = conn.execute(cells_check_query(changed)).one()
    return MaterializeResult(
        metadata={
            **table_metadata(database, STATISTICS_TABLE, summary.pairs),
            "pairs": summary.pairs,
            "cases": summary.cases,
            "rebuilt": summary.rebuilt,
            "cases_recounted": summary.cases_recounted,
            "changed_pairs": summary.changed_pairs,
            "signals_among_changed_pairs": summary.changed_pair_signals,
            "drug_roles": ", ".join(roles),
            # The events: PTs of this MedDRA version (their names in the table), or the reported codes without MedDRA
            "meddra_version": summary.meddra_version or "none loaded: events are the reported codes",
            "top_signals": MetadataValue.md(markdown_table(top, SUBGROUP_FLAGS)),
        },
        check_results=[
            AssetCheckResult(check_name=CELLS_CHECK, passed=failing == 0, metadata={"rows_checked": rows, "rows_failing": failing})
        ],
    )


signal_statistics_after_loads = AutomationConditionSensorDefinition(
    "signal_statistics_after_loads",
    target=AssetSelection.assets(drug_event_statistics),
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    description="Requests a refresh of drug_event_statistics after each load of the tables it reads.",
)

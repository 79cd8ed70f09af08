"""The code location: ``dagster dev -w workspace.yaml`` loads ``defs`` from here."""

from dagster import Definitions, EnvVar
from dagster_aws.s3 import S3Resource

from eudravig_assets.analytics import reaction_frequencies
from eudravig_assets.assets import icsr_source_files, icsr_tables
from eudravig_assets.catalog import Catalog
from eudravig_assets.io_manager import LoaderIOManager
from eudravig_assets.jobs import full_reload_job, load_icsr_files_job
from eudravig_assets.resources import EudravigDatabase, EudravigSource, catalog_from_env, database_from_env, source_from_env
from eudravig_assets.sensors import local_folder_sensor, s3_arrivals_sensor
from eudravig_assets.signals import drug_event_statistics, signal_statistics_after_loads


def resolved(value: str) -> str:
    """A resource field's value now: an ``EnvVar`` field holds the variable's name until a run resolves it."""
    return (value.get_value() or "") if isinstance(value, EnvVar) else value


def build_definitions(database: EudravigDatabase, source: EudravigSource, catalog: Catalog | None = None) -> Definitions:
    """Everything the project defines, wired to one database and one source location; ``catalog`` (default: from
    their DSN and URI, no owners or tags) says how the assets present themselves."""
    catalog = catalog or Catalog.of(resolved(database.dsn), resolved(source.source_uri))
    return Definitions(
        assets=catalog.apply([icsr_source_files, icsr_tables, reaction_frequencies, drug_event_statistics]),
        jobs=[load_icsr_files_job, full_reload_job],
        sensors=[s3_arrivals_sensor, local_folder_sensor, signal_statistics_after_loads],
        resources={
            "database": database,
            "source": source,
            "s3": S3Resource(),
            "loader_io_manager": LoaderIOManager(database=database),
        },
    )


defs = build_definitions(database_from_env(), source_from_env(), catalog_from_env())

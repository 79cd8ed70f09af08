"""The code location: ``dagster dev -w workspace.yaml`` loads ``defs`` from here."""

from dagster import Definitions
from dagster_aws.s3 import S3Resource

from eudravig_assets.analytics import reaction_frequencies
from eudravig_assets.assets import icsr_source_files, icsr_tables
from eudravig_assets.io_manager import LoaderIOManager
from eudravig_assets.jobs import full_reload_job, load_icsr_files_job
from eudravig_assets.resources import EudravigDatabase, EudravigSource, database_from_env, source_from_env
from eudravig_assets.sensors import local_folder_sensor, s3_arrivals_sensor


def build_definitions(database: EudravigDatabase, source: EudravigSource) -> Definitions:
    """Everything the project defines, wired to one database and one source location."""
    return Definitions(
        assets=[icsr_source_files, icsr_tables, reaction_frequencies],
        jobs=[load_icsr_files_job, full_reload_job],
        sensors=[s3_arrivals_sensor, local_folder_sensor],
        resources={
            "database": database,
            "source": source,
            "s3": S3Resource(),
            "loader_io_manager": LoaderIOManager(database=database),
        },
    )


defs = build_definitions(database_from_env(), source_from_env())

"""How the assets present themselves in the Dagster catalogue: kinds, owners and tags.

Kinds follow the deployment: the table assets carry the target database's kind (``postgres``,
``sqlite``, or a plugin's dialect name), the source files ``s3`` or ``file``. Owners and tags come
from the ``catalog`` settings (``config.yaml`` or the environment).
"""

from collections.abc import Iterable
from dataclasses import dataclass, field

from dagster import AssetsDefinition, AssetSpec
from sqlalchemy.engine import make_url

from py_load_eudravigilance.settings import CatalogSettings
from py_load_eudravigilance.sources import parse_location

# Dagster's kind names where they differ from SQLAlchemy's backend names
DIALECT_KINDS = {"postgresql": "postgres", "mssql": "sqlserver"}
# Assets computed outside the database say how; every other asset is a table the database holds
COMPUTE_KINDS = {"reaction_frequencies": ["pandas"]}


def database_kind(dsn: str) -> str:
    backend = make_url(dsn).get_backend_name()
    return DIALECT_KINDS.get(backend, backend)


def source_kind(source_uri: str) -> str:
    return "s3" if parse_location(source_uri).is_s3 else "file"


@dataclass(frozen=True)
class Catalog:
    database_kind: str
    source_kind: str
    owners: tuple[str, ...] = ()
    tags: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, dsn: str, source_uri: str, settings: CatalogSettings | None = None) -> "Catalog":
        settings = settings or CatalogSettings()
        return cls(database_kind(dsn), source_kind(source_uri), tuple(settings.owners), dict(settings.tags))

    def kinds_of(self, spec: AssetSpec) -> set[str]:
        if spec.key.path[-1] == "icsr_source_files":
            return {self.source_kind, "xml"}
        return {self.database_kind, *(COMPUTE_KINDS.get(spec.key.path[-1], ["table"]))}

    def present(self, spec: AssetSpec) -> AssetSpec:
        return spec.merge_attributes(kinds=self.kinds_of(spec), owners=list(self.owners), tags=self.tags)

    def apply(self, assets: Iterable[AssetsDefinition | AssetSpec]) -> list[AssetsDefinition | AssetSpec]:
        return [a.map_asset_specs(self.present) if isinstance(a, AssetsDefinition) else self.present(a) for a in assets]

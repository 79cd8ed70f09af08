"""Database loaders: the plugin contract, the registry and the built-in PostgreSQL and SQLite loaders."""

from loaders.interface import LoaderInterface
from loaders.registry import get_loader

__all__ = ["LoaderInterface", "get_loader"]

"""Public import path of the loader plugin contract (see docs/loader-plugins.md)."""

from loaders.interface import LoaderInterface

__all__ = ["LoaderInterface"]

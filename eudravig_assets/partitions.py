"""One partition per source file: dynamic, added by the arrival sensors (or by hand in the UI)."""

from __future__ import annotations

from dagster import DynamicPartitionsDefinition

icsr_files = DynamicPartitionsDefinition(name="icsr_files")

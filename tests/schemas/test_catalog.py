"""The table catalog's own rules: statistics kept on what OPTIMIZE clusters by, on columns that exist."""

from __future__ import annotations

import pytest

from schemas.catalog import TABLES, TableSpec
from streaming_jobs.silver_gold import OUTPUT_TABLES


@pytest.mark.parametrize("spec", [s for s in TABLES.values() if s.stats_columns], ids=str)
def test_a_table_keeps_statistics_on_the_columns_it_is_clustered_by(spec: TableSpec) -> None:
    assert set(spec.zorder) <= set(spec.stats_columns)
    assert spec.table_properties == {"delta.dataSkippingStatsColumns": ",".join(spec.stats_columns)}


@pytest.mark.parametrize("spec", [s for s in OUTPUT_TABLES if s.stats_columns], ids=str)
def test_stats_columns_are_columns_of_the_table(spec: TableSpec) -> None:
    assert set(spec.stats_columns) <= set(OUTPUT_TABLES[spec].names)


def test_a_table_without_stats_columns_keeps_deltas_default() -> None:
    assert TableSpec("silver", "t").table_properties == {}

"""Bokeh building blocks more than one panel uses."""

from __future__ import annotations

from typing import Any

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]


def data_table(name: str, columns: dict[str, str], height: int, width: int | None = None) -> tuple[Any, Any]:
    """An empty table and its data source (named ``<name>_source``), the columns as field -> title.
    Bokeh's table cells are text: whatever a record says is shown, never run as markup."""
    from bokeh.models import ColumnDataSource, DataTable, TableColumn

    source = ColumnDataSource({field: [] for field in columns}, name=f"{name}_source")
    sizing = {"width": width} if width else {"sizing_mode": "stretch_width"}
    table = DataTable(
        source=source,
        height=height,
        name=name,
        columns=[TableColumn(field=field, title=title) for field, title in columns.items()],
        **sizing,
    )
    return source, table

"""Printing results: tables for people, JSON (`--json`) for scripts."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from rich.console import Console
from rich.table import Table

# Piped output (scripts use --json; people read logs) is not cut at 80 columns.
console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, soft_wrap=True)


def to_dict(message: Message) -> dict[str, Any]:
    return MessageToDict(message, preserving_proto_field_name=True)


def print_json(data: Any) -> None:
    if isinstance(data, Message):
        data = to_dict(data)
    elif isinstance(data, list):
        data = [to_dict(d) if isinstance(d, Message) else d for d in data]
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    table = Table(title=title, title_justify="left")
    for index, column in enumerate(columns):
        # The first column is the id people copy into the next command: never folded across lines.
        table.add_column(column, overflow="fold", no_wrap=index == 0, min_width=36 if column in ("id", "job") else None)
    for row in rows:
        table.add_row(*("" if cell is None else str(cell) for cell in row))
    console.print(table)


def print_fields(title: str, fields: Sequence[tuple[str, Any]]) -> None:
    """One record as aligned `name  value` lines under a title (for `show` commands)."""
    table = Table(title=title, title_justify="left", show_header=False, box=None, padding=(0, 2, 0, 0))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for name, value in fields:
        table.add_row(name, "" if value is None else str(value))
    console.print(table)


def enum_label(name: str) -> str:
    """ITEM_STATE_REMOTE_ONLY -> remote_only; an unset value reads as "-"."""
    if name.endswith("_UNSPECIFIED"):
        return "-"
    for prefix in ("ITEM_KIND_", "ITEM_STATE_", "LIBRARY_KIND_", "SCAN_MODE_", "SCAN_STATUS_", "SERVER_STATUS_",
                   "CONNECTION_KIND_", "SERVER_SOURCE_", "JOB_STATUS_", "JOB_TRIGGER_", "JOB_CHANGE_"):  # fmt: skip
        if name.startswith(prefix):
            return name[len(prefix) :].lower()
    return name.lower()

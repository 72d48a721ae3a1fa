"""Compare Plex XML and JSON answers structurally (used by fakeplex's tests and usable by others).

Both forms are reduced to ``(tag, {attr: str}, [children])`` trees: JSON scalars are written the way
Plex writes them in XML (booleans as ``1``/``0``), JSON arrays become repeated child elements.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from plexsync.fakeplex.render import element_name

Tree = tuple[str, dict[str, str], list["Tree"]]


def xml_tree(body: bytes | str) -> Tree:
    return _from_element(ET.fromstring(body))


def _from_element(el: ET.Element) -> Tree:
    return (el.tag, dict(el.attrib), [_from_element(c) for c in el])


def json_tree(data: dict[str, Any], tag: str = "MediaContainer") -> Tree:
    """``data`` is the value under ``MediaContainer`` (or any nested object)."""
    attrs: dict[str, str] = {}
    children: list[Tree] = []
    for k, v in data.items():
        if isinstance(v, list):
            children.extend(json_tree(item, element_name(k, item)) for item in v if isinstance(item, dict))
        elif isinstance(v, dict):
            children.append(json_tree(v, k))
        elif v is not None:
            attrs[k] = _plain(v)
    return (tag, attrs, children)


def _plain(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)

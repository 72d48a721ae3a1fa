"""Serialize a MediaContainer dict as Plex JSON or Plex XML.

Both come from the same dict: scalars become JSON keys / XML attributes (booleans as ``1``/``0`` in
XML, as Plex writes them), lists of dicts become JSON arrays / repeated child elements named after
the key. Items under ``Metadata`` become ``<Video>`` or ``<Directory>`` elements as on a real server.
"""

from __future__ import annotations

from typing import Any

import orjson

VIDEO_TYPES = frozenset({"movie", "episode", "clip"})
_XML_DECL = '<?xml version="1.0" encoding="UTF-8"?>\n'
_ESC = str.maketrans(
    {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "\n": "&#10;", "\r": "&#13;", "\t": "&#9;"}
)


def to_json(container: dict[str, Any]) -> bytes:
    return orjson.dumps({"MediaContainer": container})


def xml_attr(value: Any) -> str:
    """A scalar as Plex writes it in an XML attribute."""
    if value is True:
        return "1"
    if value is False:
        return "0"
    if isinstance(value, str):
        return value.translate(_ESC)
    return str(value)


def element_name(list_key: str, item: dict[str, Any]) -> str:
    if list_key == "Metadata":
        return "Video" if item.get("type") in VIDEO_TYPES else "Directory"
    return list_key


def _element(name: str, d: dict[str, Any], out: list[str]) -> None:
    out.append("<" + name)
    children: list[tuple[str, Any]] = []
    for k, v in d.items():
        if isinstance(v, list | dict):
            children.append((k, v))
        elif v is not None:
            out.append(f' {k}="{xml_attr(v)}"')
    if not children:
        out.append(" />\n" if name == "MediaContainer" else " />")
        return
    out.append(">")
    for k, v in children:
        if isinstance(v, dict):
            _element(k, v, out)
            continue
        for item in v:
            if isinstance(item, dict):
                _element(element_name(k, item), item, out)
    out.append(f"</{name}>")


def to_xml(container: dict[str, Any]) -> bytes:
    out: list[str] = [_XML_DECL]
    _element("MediaContainer", container, out)
    if out[-1] != " />\n":
        out.append("\n")
    return "".join(out).encode()

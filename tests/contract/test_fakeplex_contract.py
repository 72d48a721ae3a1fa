"""fakeplex answers with the shapes, names and types of the Plex OpenAPI description.

For every Plex Media Server path fakeplex serves that the description contains, the JSON answer is
validated (Draft 2020-12, ``$ref``s resolved inside the document) against the 200 response schema.
Because Plex's schemas allow additional properties, a misspelt attribute would pass validation, so
each emitted attribute name is also looked up in the schema's ``properties``; the few names real
servers send that the description omits are listed explicitly in ``UNDOCUMENTED`` below. The XML
answer must carry the same attributes, with ``Media > Part > Stream`` nesting.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import yaml
from plexsync.fakeplex import FakePlex, LibrarySpec
from plexsync.fakeplex.xmltree import json_tree, xml_tree

SPEC_PATH = Path(__file__).parent / "plex-api" / "plex-media-server.openapi.yaml"
JSON = {"Accept": "application/json"}

# Attributes real servers send that the description leaves out, per schema context.
UNDOCUMENTED: dict[str, set[str]] = {
    "MediaContainer": {
        "allowSync",
        "art",
        "librarySectionID",
        "librarySectionTitle",
        "librarySectionUUID",
        "mediaTagPrefix",
        "mediaTagVersion",
        "thumb",
        "title1",
        "title2",
        "viewGroup",
        "key",
        "parentIndex",
        "grandparentRatingKey",
        "grandparentTitle",
        "apiVersion",
    },
    "Metadata": {
        "librarySectionID",
        "librarySectionTitle",
        "librarySectionKey",
        "Label",
        "Collection",
        "Network",
        "Chapter",
        "smart",
    },
    "Directory": {"count"},
}


def _load() -> dict[str, Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with SPEC_PATH.open(encoding="utf-8") as f:
        doc: dict[str, Any] = yaml.load(f, Loader=loader)
    return doc


DOC = _load()
# The server root answers with ServerConfiguration attributes on its MediaContainer.
UNDOCUMENTED["MediaContainer"] |= set(DOC["components"]["schemas"]["ServerConfiguration"]["allOf"][1]["properties"])


def _deref(schema: dict[str, Any], ctx: str) -> tuple[dict[str, Any], str]:
    while "$ref" in schema:
        ref = schema["$ref"]
        assert ref.startswith("#/"), ref
        node: Any = DOC
        for part in ref[2:].split("/"):
            node = node[part]
        schema, ctx = node, ref.rsplit("/", 1)[-1]
    return schema, ctx


def _properties(schema: dict[str, Any], ctx: str) -> tuple[dict[str, Any], str]:
    schema, ctx = _deref(schema, ctx)
    props: dict[str, Any] = dict(schema.get("properties", {}))
    for part in schema.get("allOf", []):
        sub, sub_ctx = _properties(part, ctx)
        props.update(sub)
        if ctx in ("MediaContainer", "") and sub_ctx != ctx and "$ref" in part:
            ctx = sub_ctx if sub_ctx == "MediaContainer" else ctx
    return props, ctx


def unknown_names(instance: Any, schema: dict[str, Any], ctx: str, where: str) -> list[str]:
    """Attribute names in ``instance`` that the schema (where it lists properties) doesn't know."""
    schema, ctx = _deref(schema, ctx)
    problems: list[str] = []
    if isinstance(instance, list):
        items = schema.get("items")
        if isinstance(items, dict):
            for i, el in enumerate(instance):
                problems += unknown_names(el, items, ctx, f"{where}[{i}]")
        return problems
    if not isinstance(instance, dict):
        return problems
    props, ctx = _properties(schema, ctx)
    if not props:
        return problems
    allowed = UNDOCUMENTED.get(ctx, set())
    for key, value in instance.items():
        if key in props:
            sub_ctx = key if "$ref" not in props[key] else ctx
            problems += unknown_names(value, props[key], sub_ctx, f"{where}.{key}")
        elif key not in allowed:
            problems.append(f"{where}.{key} (in {ctx})")
    return problems


def response_schema(path: str) -> dict[str, Any]:
    op = DOC["paths"][path]["get"]
    schema: dict[str, Any] = op["responses"]["200"]["content"]["application/json"]["schema"]
    return schema


@pytest.fixture(scope="module")
async def fp() -> AsyncIterator[FakePlex]:
    spec = LibrarySpec.from_sizes(movies=30, shows=3, seasons=2, episodes=3, other_videos=3, seed=5)
    async with FakePlex(spec=spec) as server:
        yield server


def _cases(fp: FakePlex) -> list[tuple[str, str]]:
    """(request path, description path) for everything fakeplex serves that the description has."""
    lib = fp.library
    show = lib.list_keys(2)[0]
    season = lib.nodes[show].children[0]
    episode = lib.nodes[season].children[0]
    other = lib.list_keys(3)[0]
    movie_coll = lib.sections[1].collections[0]
    multi = next(rk for rk in lib.list_keys(1) if len(lib.render(rk)["Media"]) > 1)
    out = [
        ("/", "/"),
        ("/identity", "/identity"),
        ("/library/sections", "/library/sections/all"),
        ("/library/sections/all", "/library/sections/all"),
        ("/library/all?type=18", "/library/all"),
        ("/library/all?type=1&includeGuids=1", "/library/all"),
        ("/library/tags?type=319", "/library/tags"),
        ("/library/sections/1/collections", "/library/sections/{sectionId}/collections"),
        (f"/library/collections/{movie_coll}/items", "/library/collections/{collectionId}/items"),
        (f"/library/metadata/{show}/allLeaves", "/library/metadata/{ids}/allLeaves"),
        (f"/library/metadata/{season}/allLeaves?includeGuids=1", "/library/metadata/{ids}/allLeaves"),
    ]
    for q in ("", "?includeGuids=1", "?type=18", "?X-Plex-Container-Start=0&X-Plex-Container-Size=0"):
        out.append((f"/library/sections/1/all{q}", "/library/sections/{sectionId}/all"))
    for q in ("", "?type=3", "?type=4&includeGuids=1", "?type=18", "?network=500"):
        out.append((f"/library/sections/2/all{q}", "/library/sections/{sectionId}/all"))
    out.append(("/library/sections/3/all", "/library/sections/{sectionId}/all"))
    for rk in (1, multi, show, season, episode, other, movie_coll):
        out.append((f"/library/metadata/{rk}?includeChapters=1", "/library/metadata/{ids}"))
    out.append((f"/library/metadata/1,{episode}", "/library/metadata/{ids}"))
    # Served like /allLeaves but absent from the description; hold them to the same schema.
    out.append((f"/library/metadata/{show}/children", "/library/metadata/{ids}/allLeaves"))
    out.append((f"/library/metadata/{season}/children", "/library/metadata/{ids}/allLeaves"))
    out.append((f"/library/collections/{movie_coll}/children", "/library/collections/{collectionId}/items"))
    return out


async def test_every_served_path_matches_the_description(fp: FakePlex) -> None:
    failures: list[str] = []
    async with httpx.AsyncClient(base_url=fp.url, headers={"X-Plex-Token": fp.token}) as c:
        for url, spec_path in _cases(fp):
            j = await c.get(url, headers=JSON)
            x = await c.get(url)
            assert j.status_code == x.status_code == 200, url
            body = j.json()
            schema = dict(response_schema(spec_path))
            schema["components"] = DOC["components"]
            validator = jsonschema.Draft202012Validator(schema)
            failures += [
                f"{url}: {'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(body)
            ]
            failures += [f"{url}: undocumented {n}" for n in unknown_names(body, response_schema(spec_path), "", "$")]
            if xml_tree(x.content) != json_tree(body["MediaContainer"]):
                failures.append(f"{url}: XML and JSON disagree")
    assert not failures, "\n".join(failures[:50])


async def test_xml_media_part_stream_nesting(fp: FakePlex) -> None:
    async with httpx.AsyncClient(base_url=fp.url, headers={"X-Plex-Token": fp.token}) as c:
        for rk in fp.library.list_keys(1)[:5]:
            j = (await c.get(f"/library/metadata/{rk}", headers=JSON)).json()["MediaContainer"]["Metadata"][0]
            tag, attrs, children = xml_tree((await c.get(f"/library/metadata/{rk}")).content)[2][0]
            assert tag == "Video"
            assert set(attrs) == {k for k, v in j.items() if not isinstance(v, list)}
            media = [ch for ch in children if ch[0] == "Media"]
            assert len(media) == len(j["Media"])
            for m_xml, m_json in zip(media, j["Media"], strict=True):
                assert m_xml[1]["id"] == str(m_json["id"])
                parts = m_xml[2]
                assert [p[0] for p in parts] == ["Part"] * len(m_json["Part"])
                for p_xml, p_json in zip(parts, m_json["Part"], strict=True):
                    assert p_xml[1]["file"] == p_json["file"]
                    assert [s[1]["id"] for s in p_xml[2] if s[0] == "Stream"] == [
                        str(s["id"]) for s in p_json["Stream"]
                    ]


def test_the_checker_catches_unknown_names() -> None:
    schema = response_schema("/library/sections/{sectionId}/all")
    body = {
        "MediaContainer": {
            "size": 1,
            "Metadata": [
                {
                    "title": "x",
                    "type": "movie",
                    "key": "k",
                    "addedAt": 1,
                    "Media": [{"id": 1, "Prat": []}],
                    "tittle": "typo",
                }
            ],
        }
    }
    problems = unknown_names(body, schema, "", "$")
    assert any("tittle" in p for p in problems) and any("Prat" in p for p in problems)

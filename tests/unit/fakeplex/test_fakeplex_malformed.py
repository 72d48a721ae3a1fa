"""``malformed`` rules with a variant: each a realistic corruption of the real answer, in the format asked."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import httpx
import orjson
import pytest
from plexsync.fakeplex import FakePlexControl, FaultRule
from plexsync.fakeplex.faults import ABSURD_TOTAL, DEEP_XML_LEVELS, HUGE_TITLE_CHARS, INVALID_UTF8, MALFORMED_VARIANTS

JSON = {"Accept": "application/json"}
XML = {"Accept": "application/xml"}
LISTING = "/library/sections/1/all"


def page(start: int, size: int, accept: dict[str, str] = JSON) -> dict[str, str]:
    return {**accept, "X-Plex-Container-Start": str(start), "X-Plex-Container-Size": str(size)}


async def real(client: httpx.AsyncClient, path: str, headers: dict[str, str]) -> dict[str, Any]:
    r = await client.get(path, headers={**headers, "Accept": "application/json"})
    data: dict[str, Any] = r.json()["MediaContainer"]
    return data


async def faulty(
    ctl: FakePlexControl, client: httpx.AsyncClient, variant: str, path: str, headers: dict[str, str]
) -> httpx.Response:
    await ctl.add_fault("malformed", variant=variant, path_prefix=path, times=1)  # type: ignore[arg-type]
    return await client.get(path, headers=headers)


def xml_entries(body: bytes) -> list[ET.Element]:
    return [el for el in ET.fromstring(body) if el.tag in ("Video", "Directory")]


def test_variant_needs_malformed_and_a_known_name() -> None:
    assert FaultRule.from_dict({"kind": "malformed", "variant": "deep_xml"}).variant == "deep_xml"
    with pytest.raises(ValueError, match="variant"):
        FaultRule.from_dict({"kind": "malformed", "variant": "nonsense"})
    with pytest.raises(ValueError, match="variant"):
        FaultRule.from_dict({"kind": "error", "variant": "deep_xml"})


async def test_unknown_variant_is_refused_by_the_control_api(ctl: FakePlexControl) -> None:
    with pytest.raises(Exception, match="400"):
        await ctl.add_fault("malformed", variant="bogus")  # type: ignore[arg-type]


@pytest.mark.parametrize("accept", [JSON, XML])
async def test_truncated_bodies_are_cut_in_their_own_format(
    client: httpx.AsyncClient, ctl: FakePlexControl, accept: dict[str, str]
) -> None:
    whole = orjson.dumps({"MediaContainer": await real(client, LISTING, page(0, 10))})
    r = await faulty(ctl, client, "truncated_json", LISTING, page(0, 10, accept))
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    assert whole.startswith(r.content) and 0 < len(r.content) < len(whole)
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(r.content)
    r = await faulty(ctl, client, "truncated_xml", LISTING, page(0, 10, accept))
    assert r.headers["content-type"].startswith("text/xml") and r.content.startswith(b"<?xml")
    with pytest.raises(ET.ParseError):
        ET.fromstring(r.content)
    assert (await client.get(LISTING, headers=page(0, 10, accept))).status_code == 200  # times=1: next is real


@pytest.mark.parametrize("accept", [JSON, XML])
async def test_wrong_types(client: httpx.AsyncClient, ctl: FakePlexControl, accept: dict[str, str]) -> None:
    good = (await real(client, LISTING, page(0, 5)))["Metadata"]
    r = await faulty(ctl, client, "wrong_types", LISTING, page(0, 5, accept))
    if accept is JSON:
        entries = r.json()["MediaContainer"]["Metadata"]
        first = entries[0]
        assert first["addedAt"] == "yesterday" and first["duration"] == "1h 32m"
        assert isinstance(first["Media"], dict) and first["Media"]["id"] == good[0]["Media"][0]["id"]
        assert entries[1:] == good[1:]
    else:
        first_el = xml_entries(r.content)[0]
        assert first_el.get("addedAt") == "yesterday" and first_el.get("ratingKey") == good[0]["ratingKey"]


@pytest.mark.parametrize("accept", [JSON, XML])
async def test_missing_keys(client: httpx.AsyncClient, ctl: FakePlexControl, accept: dict[str, str]) -> None:
    good = (await real(client, LISTING, page(0, 5)))["Metadata"]
    r = await faulty(ctl, client, "missing_keys", LISTING, page(0, 5, accept))
    if accept is JSON:
        entries = r.json()["MediaContainer"]["Metadata"]
        assert "ratingKey" not in entries[0] and entries[0]["title"] == good[0]["title"]
        assert "Media" not in entries[1] and entries[1]["ratingKey"] == good[1]["ratingKey"]
        assert entries[2:] == good[2:]
    else:
        els = xml_entries(r.content)
        assert els[0].get("ratingKey") is None and els[1].find("Media") is None
        assert els[2].find("Media") is not None


async def test_missing_keys_of_a_show_drop_its_type(client: httpx.AsyncClient, ctl: FakePlexControl) -> None:
    r = await faulty(ctl, client, "missing_keys", "/library/sections/2/all", page(0, 3))
    entries = r.json()["MediaContainer"]["Metadata"]
    assert "ratingKey" not in entries[0] and "type" not in entries[1]


async def test_duplicate_keys_within_and_across_pages(client: httpx.AsyncClient, ctl: FakePlexControl) -> None:
    keys = [m["ratingKey"] for m in (await real(client, LISTING, page(0, 40)))["Metadata"]]
    r = await faulty(ctl, client, "duplicate_keys", LISTING, page(0, 10))
    mc = r.json()["MediaContainer"]
    assert [m["ratingKey"] for m in mc["Metadata"]] == keys[:10] + keys[:1] and mc["size"] == 11
    r = await faulty(ctl, client, "duplicate_keys", LISTING, page(10, 10, XML))
    root = ET.fromstring(r.content)
    got = [el.get("ratingKey") for el in xml_entries(r.content)]
    assert got == keys[9:19] + keys[9:10]  # one earlier: the previous page's last entry comes again
    assert root.get("offset") == "10"


async def test_duplicate_keys_of_metadata(client: httpx.AsyncClient, ctl: FakePlexControl) -> None:
    r = await faulty(ctl, client, "duplicate_keys", "/library/metadata/1,2", JSON)
    assert [m["ratingKey"] for m in r.json()["MediaContainer"]["Metadata"]] == ["1", "2", "1"]


@pytest.mark.parametrize("variant, total", [("negative_total", -1), ("absurd_total", ABSURD_TOTAL)])
@pytest.mark.parametrize("accept", [JSON, XML])
async def test_totals(
    client: httpx.AsyncClient, ctl: FakePlexControl, variant: str, total: int, accept: dict[str, str]
) -> None:
    good = await real(client, LISTING, page(0, 5))
    r = await faulty(ctl, client, variant, LISTING, page(0, 5, accept))
    assert r.headers["X-Plex-Container-Total-Size"] == str(total)
    if accept is JSON:
        mc = r.json()["MediaContainer"]
        assert mc["totalSize"] == total and mc["Metadata"] == good["Metadata"]
    else:
        assert ET.fromstring(r.content).get("totalSize") == str(total)
    r = await faulty(ctl, client, variant, LISTING, page(0, 0))  # a count request too
    assert r.json()["MediaContainer"]["totalSize"] == total


async def test_huge_title(client: httpx.AsyncClient, ctl: FakePlexControl) -> None:
    r = await faulty(ctl, client, "huge_title", "/library/metadata/1", JSON)
    meta = r.json()["MediaContainer"]["Metadata"][0]
    assert len(meta["title"]) == HUGE_TITLE_CHARS and meta["ratingKey"] == "1"
    assert len(r.content) > HUGE_TITLE_CHARS and int(r.headers["content-length"]) == len(r.content)


@pytest.mark.parametrize("accept", [JSON, XML])
async def test_invalid_utf8(client: httpx.AsyncClient, ctl: FakePlexControl, accept: dict[str, str]) -> None:
    r = await faulty(ctl, client, "invalid_utf8", LISTING, page(0, 5, accept))
    assert INVALID_UTF8 in r.content
    with pytest.raises(UnicodeDecodeError):
        r.content.decode()
    clean = (await client.get(LISTING, headers=page(0, 5, accept))).content
    assert r.content.replace(b" " + INVALID_UTF8, b"", 1) == clean  # the real answer but for those bytes


@pytest.mark.parametrize("accept", [JSON, XML])
async def test_deep_xml(client: httpx.AsyncClient, ctl: FakePlexControl, accept: dict[str, str]) -> None:
    r = await faulty(ctl, client, "deep_xml", LISTING, page(0, 5, accept))
    assert r.headers["content-type"].startswith("text/xml")
    assert r.content.count(b"<Extras>") == DEEP_XML_LEVELS
    root = ET.fromstring(r.content)  # well-formed: only its depth is hostile
    depth, el = 0, root.find("Extras")
    while el is not None:
        depth, el = depth + 1, el.find("Extras")
    assert depth == DEEP_XML_LEVELS and len(xml_entries(r.content)) == 5


async def test_deep_xml_of_an_empty_answer(client: httpx.AsyncClient, ctl: FakePlexControl) -> None:
    r = await faulty(ctl, client, "deep_xml", "/identity", JSON)
    assert ET.fromstring(r.content).tag == "MediaContainer"


async def test_entity_bomb(client: httpx.AsyncClient, ctl: FakePlexControl) -> None:
    r = await faulty(ctl, client, "entity_bomb", LISTING, page(0, 3))
    assert r.headers["content-type"].startswith("text/xml") and len(r.content) < 20_000
    assert b"<!DOCTYPE MediaContainer [" in r.content and b'title="&lol9;"' in r.content
    assert r.content.count(b"<!ENTITY") == 10


@pytest.mark.parametrize("variant", MALFORMED_VARIANTS)
async def test_every_variant_fires_as_often_as_told_and_errors_stay_errors(
    client: httpx.AsyncClient, ctl: FakePlexControl, variant: str
) -> None:
    await ctl.add_fault("malformed", variant=variant, path_prefix="/library/metadata", times=1)  # type: ignore[arg-type]
    r = await client.get("/library/metadata/99999999", headers=JSON)
    assert r.status_code == 404  # a failed answer is not corrupted (but the rule fired)
    r = await client.get("/library/metadata/1", headers=JSON)
    assert r.json()["MediaContainer"]["Metadata"][0]["ratingKey"] == "1"

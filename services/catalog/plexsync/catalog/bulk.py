"""The fast half of WriteItems for new items: lean flattening, column-wise validation, text COPY payloads.

`ingest.flatten_item` validates every field as it goes, building a path for each violation; that is exact but
costs ~150 µs per fully described movie, most of it Python bytecode around ~400 protobuf field reads. Here the
same rows are built without per-field checks (`flatten_fast`), and the rules are then checked once per
*column* of the whole batch with C-speed builtins (`max(map(len, col))`, one NUL search over all text,
`set(col) <= allowed`, key uniqueness via `set(zip(...))`). The column checks are at least as strict as the
per-field rules; when any fails, the batch is flattened again by `ingest.flatten_items`, which either
reports every violation with its field path or (when the column check was only conservative) returns the
rows. `flatten_checked` therefore accepts and rejects exactly what `ingest.flatten_items` does, with the same
rows and the same violations (tests/unit/catalog/test_bulk.py compares them).

`copy_payloads` turns rows into COPY text per table, column by column (`map(str, ...)` and one escape check
per column), so a batch's payload is a few large strings. Credit rows leave their last column (the person
id, only known inside the transaction) to be appended by the writer.

`speculate` is what the writer's worker process runs for a whole batch (request bytes in, payloads out), so
this CPU work uses the second core while PostgreSQL writes the previous batch.
"""

from __future__ import annotations

import uuid
from array import array
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from itertools import chain, repeat
from operator import eq
from typing import Any, cast

from plexsync.catalog import ingest
from plexsync.catalog.ingest import (
    ARTWORK_KINDS,
    CREDIT_ROLES,
    ITEM_KINDS,
    MAX_KEY,
    MAX_LIST,
    MAX_SHORT,
    MAX_TEXT,
    MAX_TITLE,
    MAX_URL,
    PART_STATES,
    STREAM_KINDS,
    Incoming,
    ItemId,
    Rows,
    artwork_entry,
    guid_entry,
    json_list,
    search_vector,
    text_array,
    to_datetime,
)
from plexsync.v1 import catalog_pb2

Column = tuple[str, str]


def _ms(d: Any) -> int:
    return d.seconds * 1000 + d.nanos // 1_000_000  # type: ignore[no-any-return]


def _credit_ok(c: Any) -> bool:
    name, character, thumb = c.name, c.character, c.thumb_url
    return not (
        c.role not in CREDIT_ROLES or not name or len(name) > MAX_SHORT or len(character) > MAX_SHORT
        or len(thumb) > MAX_URL or c.order < 0 or "\x00" in name or "\x00" in character or "\x00" in thumb
    )  # fmt: skip


def _guid_ok(g: Any) -> bool:
    return len(g.provider) <= MAX_SHORT and len(g.external_id) <= MAX_URL and "\x00" not in g.provider + g.external_id


def _artwork_ok(a: Any) -> bool:
    return len(a.source) <= MAX_SHORT and "\x00" not in a.source


def flatten_fast(batch: Iterable[tuple[Incoming, uuid.UUID | str]], library_id: uuid.UUID | str) -> Rows | None:
    """The rows `ingest.flatten_item` would build, without per-field checks; None when a rule that is not a
    column check fails (the caller then takes the exact path)."""
    rows = Rows()
    items_append = rows.items.append
    credits_append = rows.credits.append
    versions_append = rows.versions.append
    parts_append = rows.parts.append
    streams_append = rows.streams.append
    chapters_append = rows.chapters.append
    for inc, item_id in batch:
        it = inc.item
        tag_lists: list[str] = []
        genres = ""
        for n, values in enumerate((it.genres, it.studios, it.labels, it.countries, it.networks)):
            if values:
                if len(values) > MAX_LIST:
                    return None
                unique = list(dict.fromkeys(values))
                if not all(unique) or max(map(len, unique)) > MAX_SHORT:
                    return None
                tag_lists.append(text_array(unique))
                if n == 0:
                    genres = " ".join(unique)
            else:
                tag_lists.append("{}")

        people: list[str] = []
        credit_keys: set[tuple[int, str, int]] = set()
        for c in it.credits:
            role, name, tag = c.role, c.name, c.plex_tag_id
            key = (role, name, tag)
            if key in credit_keys:  # skipped duplicate: still checked, like the exact path does
                if not _credit_ok(c):
                    return None
                continue
            credit_keys.add(key)
            people.append(name)
            credits_append((item_id, role, (name, tag), c.order, c.character, c.thumb_url))

        guids: list[dict[str, str]] = []
        uris: set[str] = set()
        for g in it.guids:
            uri, gprov, gext = g.uri, g.provider, g.external_id
            if uri in uris:
                if not _guid_ok(g):
                    return None
                continue
            uris.add(uri)
            provider, _, ext = uri.partition("://")
            provider, ext = gprov or provider, gext or ext
            if not uri or len(uri) > MAX_URL or len(provider) > MAX_SHORT or len(ext) > MAX_URL:
                return None
            guids.append(guid_entry(uri, provider, ext))

        artwork: list[dict[str, Any]] = []
        art_keys: set[tuple[int, str]] = set()
        for a in it.artwork:
            akey = (a.kind, a.url)
            if akey in art_keys:
                if not _artwork_ok(a):
                    return None
                continue
            art_keys.add(akey)
            kind, url, source = akey[0], akey[1], a.source
            if kind not in ARTWORK_KINDS or not url or len(url) > MAX_URL or len(source) > MAX_SHORT:
                return None
            artwork.append(artwork_entry(kind, url, source, a.updated_at))

        for j, m in enumerate(it.media):
            mid = m.plex_media_id
            versions_append(
                (
                    item_id, mid, j, _ms(m.duration), m.bitrate, m.width, m.height, m.aspect_ratio,
                    m.audio_channels, m.audio_codec, m.video_codec, m.video_resolution, m.container,
                    m.video_frame_rate, m.video_profile,
                )
            )  # fmt: skip
            for k, part in enumerate(m.parts):
                pid = part.plex_part_id
                parts_append(
                    (
                        item_id, mid, pid, k, part.plex_key, part.plex_path, part.local_path, part.size_bytes,
                        _ms(part.duration), part.container, part.video_profile, part.audio_profile, part.state,
                    )
                )  # fmt: skip
                for n, s in enumerate(part.streams):
                    streams_append(
                        (
                            item_id, mid, pid, s.plex_stream_id, n, s.kind, s.index, s.codec, s.language,
                            s.language_code, s.title, s.display_title, s.is_default, s.forced, s.width, s.height,
                            s.channels, s.bitrate, s.profile, s.frame_rate, s.audio_channel_layout, s.external_key,
                        )
                    )  # fmt: skip

        for ch in it.chapters:
            chapters_append((item_id, ch.index, ch.title, _ms(ch.start), _ms(ch.end)))

        release: date | None = None
        if it.release_date:
            try:
                release = date.fromisoformat(it.release_date)
            except ValueError:
                return None
        title, sort_title, original_title = it.title, it.sort_title, it.original_title
        search_title = " ".join(t for t in (title, original_title, sort_title if sort_title != title else "") if t)
        folded = search_title.casefold()
        items_append(
            (
                item_id, library_id, it.kind, it.rating_key, it.parent_rating_key, it.etag, inc.state, inc.digest,
                title, sort_title, original_title, it.plot, it.tagline, it.year, release, it.content_rating,
                it.index, it.parent_index, _ms(it.duration), it.rating, it.audience_rating, it.child_count,
                it.leaf_count, it.plex_guid, to_datetime(it.plex_added_at), to_datetime(it.plex_updated_at),
                folded, search_vector(folded, " ".join(people).casefold(), genres.casefold()), *tag_lists,
                json_list(guids), json_list(artwork),
            )
        )  # fmt: skip
    return rows


# Columns of an item row (writer.ITEM_COLS; tests/unit/catalog/test_bulk.py checks these positions).
ITEM_WIDTH = 35
ITEM_TAG_LISTS = slice(28, 33)  # genres, studios, labels, countries, networks
ITEM_GUIDS, ITEM_ARTWORK = 33, 34


def _columns(rows: Sequence[tuple[Any, ...]], width: int) -> list[tuple[Any, ...]]:
    return list(zip(*rows, strict=True)) if rows else [() for _ in range(width)]


class Transposed:
    """The rows of each table as columns, transposed once and shared by the column checks and the COPY text."""

    def __init__(self, rows: Rows) -> None:
        self.rows = rows
        self._cache: dict[str, list[tuple[Any, ...]]] = {}

    def get(self, attr: str, width: int) -> list[tuple[Any, ...]]:
        cols = self._cache.get(attr)
        if cols is None:
            cols = self._cache[attr] = _columns(getattr(self.rows, attr), width)
        return cols


def _non_negative(*cols: Sequence[Any]) -> bool:
    for col in cols:
        if col:
            if not min(col) >= 0:
                return False
            total = sum(col)
            if total != total:  # NaN somewhere (min() can step over it)
                return False
    return True


def _texts_fit(limit: int, *cols: Sequence[str]) -> bool:
    return all(not col or max(map(len, col)) <= limit for col in cols)


def _unique(*cols: Sequence[Any]) -> bool:
    """Whether the rows' keys (these columns) are unique. Plex ids are unique server-wide, so the last column
    alone usually is, which is cheaper to check than tuples of the whole key."""
    if not cols[0] or len(set(cols[-1])) == len(cols[-1]):
        return True
    return len(set(zip(*cols, strict=True))) == len(cols[0])


def columns_ok(rows: Rows, transposed: Transposed | None = None, *, check_nul: bool = True) -> bool:
    """Every rule of `ingest.flatten_item`, checked per column of the batch (possibly stricter). Without
    `check_nul` the caller looks for NUL characters itself (in the COPY payloads, see `speculate`)."""
    tr = transposed or Transposed(rows)
    it = tr.get("items", ITEM_WIDTH)
    years = {y for y in it[13] if y}
    if years and not (min(years) >= 1800 and max(years) <= 3000):
        return False
    if not (set(it[2]) <= ITEM_KINDS and _texts_fit(MAX_KEY, it[4], it[5])):
        return False
    if any(map(eq, it[4], it[3])):  # parent_rating_key == rating_key
        return False
    if not (_texts_fit(MAX_TITLE, it[8], it[9], it[10], it[12]) and _texts_fit(MAX_TEXT, it[11])):
        return False
    if not (_texts_fit(MAX_SHORT, it[15]) and _texts_fit(MAX_URL, it[23])):
        return False
    if not _non_negative(it[16], it[17], it[18], it[19], it[20], it[21], it[22]):
        return False
    # Guid and artwork JSON shows a NUL as an escape; the raw texts it came from are not kept.
    if "\\u0000" in "".join(chain(it[ITEM_GUIDS], it[ITEM_ARTWORK])):
        return False
    texts: list[Sequence[str]] = [
        it[4],
        it[5],
        it[8],
        it[9],
        it[10],
        it[11],
        it[12],
        it[15],
        it[23],
        *it[ITEM_TAG_LISTS],
    ]

    cr = tr.get("credits", 6)
    if cr[0]:
        names = [k[0] for k in cr[2]]
        if not (set(cr[1]) <= CREDIT_ROLES and all(names) and _texts_fit(MAX_SHORT, names, cr[4])):
            return False
        if not (_texts_fit(MAX_URL, cr[5]) and _non_negative(cr[3])):
            return False
        texts += [names, cr[4], cr[5]]

    ve = tr.get("versions", 15)
    if not (_non_negative(ve[1], ve[3], ve[4], ve[5], ve[6], ve[7], ve[8]) and _unique(ve[0], ve[1])):
        return False
    if not _texts_fit(MAX_SHORT, *ve[9:15]):
        return False
    texts += ve[9:15]

    pa = tr.get("parts", 13)
    if not (_non_negative(pa[2], pa[7], pa[8]) and _unique(pa[0], pa[1], pa[2]) and set(pa[12]) <= PART_STATES):
        return False
    if not (_texts_fit(MAX_URL, pa[4], pa[5], pa[6]) and _texts_fit(MAX_SHORT, pa[9], pa[10], pa[11])):
        return False
    texts += pa[4:7] + pa[9:12]

    st = tr.get("streams", 22)
    if not (_non_negative(st[3], st[6], st[14], st[15], st[16], st[17]) and set(st[5]) <= STREAM_KINDS):
        return False
    if not (_unique(st[0], st[1], st[2], st[3]) and _texts_fit(MAX_URL, st[21])):
        return False
    if not _texts_fit(MAX_SHORT, *st[7:12], *st[18:21]):
        return False
    texts += st[7:12] + st[18:22]

    ch = tr.get("chapters", 5)
    if not (_unique(ch[0], ch[1]) and _texts_fit(MAX_TITLE, ch[2]) and _non_negative(ch[3], ch[4])):
        return False
    texts.append(ch[2])
    return not check_nul or "\x00" not in "".join(chain.from_iterable(texts))


def flatten_checked(batch: Sequence[tuple[Incoming, ItemId]], library_id: uuid.UUID) -> Rows:
    """Same contract as `ingest.flatten_items` (rows, or InvalidArgumentError with every field path)."""
    rows = flatten_fast(batch, library_id)
    if rows is not None and columns_ok(rows):
        return rows
    return ingest.flatten_items(batch, library_id)


# --- COPY text -------------------------------------------------------------------------------------------

_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_BOOL = {True: "t", False: "f"}


def _uuid(col: Sequence[uuid.UUID | str]) -> Iterable[str]:
    if col and isinstance(col[0], str):  # the worker's rows carry their item ids as text already
        return col  # type: ignore[return-value]
    names = {u: str(u) for u in set(col)}  # child rows repeat their item's id
    return map(names.__getitem__, col)


def _nullable(convert: Callable[[Any], str]) -> Callable[[Sequence[Any]], Iterable[str]]:
    return lambda col: ["\\N" if v is None else convert(v) for v in col]


# Column types whose row values are PostgreSQL literals made in Python (ingest.text_array, json_list,
# search_vector); with plain text, the types whose values are already text, escaped for COPY when needed.
LITERAL_TYPES = frozenset({"text[]", "jsonb", "tsvector"})
_TEXT_TYPES = LITERAL_TYPES | {"text"}

_CONVERT: dict[str, Callable[[Sequence[Any]], Iterable[str]]] = {
    **dict.fromkeys(_TEXT_TYPES, lambda col: col),
    "uuid": _uuid,
    "int2": lambda col: map(str, col),
    "int4": lambda col: map(str, col),
    "int8": lambda col: map(str, col),
    "float8": lambda col: map(repr, col),
    "bool": lambda col: map(_BOOL.__getitem__, col),
    "bytea": lambda col: ["\\\\x" + v.hex() for v in col],
    "timestamptz": _nullable(lambda v: v.isoformat()),
    "date": _nullable(lambda v: v.isoformat()),
}


def _columns_text(columns: Sequence[Sequence[Any]], types: Sequence[str]) -> list[Iterable[str]]:
    """Every column as COPY text values (text columns escaped when any value needs it)."""
    cols = list(columns)
    texts = [i for i, t in enumerate(types) if t in _TEXT_TYPES]
    joined = "".join(chain.from_iterable(cols[i] for i in texts))
    if "\\" in joined or "\t" in joined or "\n" in joined or "\r" in joined:
        for i in texts:
            cols[i] = tuple(v.translate(_ESCAPES) for v in cols[i])
    return [_CONVERT[t](col) for t, col in zip(types, cols, strict=True)]


def copy_text(rows: Sequence[tuple[Any, ...]], types: Sequence[str]) -> str:
    """Rows in COPY text format, converted column by column."""
    if not rows:
        return ""
    return _lines(_columns(rows, len(types)), types)


def _lines(columns: Sequence[Sequence[Any]], types: Sequence[str]) -> str:
    return "\n".join(map("\t".join, zip(*_columns_text(columns, types), strict=True))) + "\n"


@dataclass
class Payloads:
    """COPY text of new items per table (name -> UTF-8 bytes); the credit rows whose person id was known
    (`credit_lines`, complete), and the others without their person id: line prefixes ending in a tab, and for
    each the index of its person in `people` (those the writer must still look up or insert)."""

    tables: dict[str, bytes] = field(default_factory=dict)
    credit_prefixes: list[str] = field(default_factory=list)
    credit_people: list[int] = field(default_factory=list)
    people: list[tuple[str, int]] = field(default_factory=list)
    credit_lines: bytes = b""

    # Sent from the worker as a few large strings and arrays: pickling tens of thousands of small strings,
    # ints and tuples one by one cost more than building them. Prefixes hold no raw newline (COPY escapes it)
    # and names no NUL (rejected by validation), so those separate them.
    def __getstate__(self) -> tuple[Any, ...]:
        return (
            self.tables,
            "\n".join(self.credit_prefixes),
            array("q", self.credit_people).tobytes(),
            "\x00".join(name for name, _ in self.people),
            array("q", [tag for _, tag in self.people]).tobytes(),
            self.credit_lines,
        )

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self.tables, prefixes, credit_people, names, tags, self.credit_lines = state
        self.credit_prefixes = prefixes.split("\n") if prefixes else []
        self.credit_people = array("q", credit_people).tolist()
        self.people = list(zip(names.split("\x00"), array("q", tags).tolist(), strict=True)) if names else []


# Credits are written with the person id last (COPY lists its columns), so the rest of a line is prepared
# before the people are resolved.
CREDIT_COPY_COLS: list[Column] = [
    ("item_id", "uuid"), ("role", "int2"), ("position", "int4"), ("character", "text"), ("thumb_url", "text"),
    ("person_id", "int8"),
]  # fmt: skip


# Types whose values `%s` formats as COPY text accepts them (booleans as True/False, floats by repr, UUIDs in
# their canonical form); bytea and the nullable dates need their own conversion.
_PLAIN_TYPES = _TEXT_TYPES | {"uuid", "int2", "int4", "int8", "float8", "bool"}


def _plain_lines(rows: Sequence[tuple[Any, ...]], width: int) -> str | None:
    """Rows as COPY text with one `%` template per row, or None when a text value holds a character COPY must
    escape. The template leaves values as they are, so such a character shows up in the totals: text with
    exactly the separators its rows need, and no backslash or carriage return, has none to escape."""
    text = "".join(map(("\t".join(("%s",) * width) + "\n").__mod__, rows))
    if _needs_escapes(text, len(rows), width - 1, len(rows)):
        return None
    return text


def _needs_escapes(text: str, rows: int, tabs_per_row: int, newlines: int) -> bool:
    return text.count("\t") != rows * tabs_per_row or text.count("\n") != newlines or "\\" in text or "\r" in text


def copy_payloads(
    rows: Rows,
    tables: Sequence[tuple[str, Sequence[Column], str]],
    transposed: Transposed | None = None,
    known_people: Mapping[tuple[str, int], int] | None = None,
) -> Payloads:
    """COPY text of every table in `tables` ((table, columns, Rows attribute)) and of the credits: complete
    lines for credits whose person is in `known_people`, prefixes for the others.

    Tables of plain types are formatted a row at a time with a template (about twice as fast as converting
    column by column); those with dates or bytes, and batches whose text needs escapes, column by column."""
    tr = transposed or Transposed(rows)
    out = Payloads()
    for table, cols, attr in tables:
        table_rows = getattr(rows, attr)
        if table_rows:
            types = [t for _, t in cols]
            text = _plain_lines(table_rows, len(cols)) if _PLAIN_TYPES.issuperset(types) else None
            out.tables[table] = (text or _lines(tr.get(attr, len(cols)), types)).encode()
    if rows.credits:
        prefixes = [f"{r[0]}\t{r[1]}\t{r[3]}\t{r[4]}\t{r[5]}\t" for r in rows.credits]
        if _needs_escapes("\n".join(prefixes), len(prefixes), 5, len(prefixes) - 1):
            cr = tr.get("credits", 6)
            texts = _columns_text([cr[0], cr[1], cr[3], cr[4], cr[5]], [t for _, t in CREDIT_COPY_COLS[:-1]])
            prefixes = list(map("\t".join, zip(*texts, ("",) * len(cr[0]), strict=True)))
        known = known_people.get if known_people else None
        person_ids = [known(r[2]) for r in rows.credits] if known else []
        if person_ids and None not in person_ids:  # every person known: complete lines, nothing to look up
            out.credit_lines = credit_lines(prefixes, cast(list[int], person_ids))
            return out
        index: dict[tuple[str, int], int] = {}
        known_prefixes: list[str] = []
        known_ids: list[int] = []
        for prefix, row, person_id in zip(prefixes, rows.credits, person_ids or repeat(None), strict=False):
            if person_id is None:
                out.credit_prefixes.append(prefix)
                out.credit_people.append(index.setdefault(row[2], len(index)))
            else:
                known_prefixes.append(prefix)
                known_ids.append(person_id)
        out.credit_lines = credit_lines(known_prefixes, known_ids)
        out.people = list(index)
    return out


def credit_lines(prefixes: Sequence[str], person_ids: Iterable[int]) -> bytes:
    """The credits COPY text once the person ids are known."""
    return "".join([f"{p}{i}\n" for p, i in zip(prefixes, person_ids, strict=True)]).encode()


SPECULATE_CHUNK = 100  # items per piece of a batch sent to the worker (see `speculate`)
KNOWN_PEOPLE_LIMIT = 500_000  # people ids a worker remembers (then it starts again from the next ones sent)

# In a worker process: (name, Plex tag id) -> people.id of people committed to the database, as sent by the
# writer with each batch (`speculate`'s `new_people`). People rows are never deleted or renumbered, so an id
# once committed stays right; a person the worker does not know yet is left to the writer.
_KNOWN_PEOPLE: dict[tuple[str, int], int] = {}


def speculate(
    chunks: Sequence[bytes],
    ids: list[str],
    states: list[int],
    digests: list[bytes],
    library_id: uuid.UUID,
    tables: Sequence[tuple[str, Sequence[Column], str]],
    new_people: Sequence[tuple[str, int, int]] = (),
) -> Payloads | None:
    """Worker-process entry: the payloads of a whole batch as if every item were new; None when the batch has
    violations (the writer's exact pass reports them if those items must be written). Item ids come as text:
    they are only formatted here, and UUID objects cost more to pickle, hash and format than the strings.

    `new_people` are (name, tag, id) of people committed since the writer last sent them: credits of people
    the worker knows come back as complete COPY lines, so the writer has nothing to do per credit for them.

    The batch comes as serialized requests of up to `SPECULATE_CHUNK` items each (`ingest.frame_items`),
    parsed, flattened and formatted one at a time: the messages, rows and text of a hundred items stay in the
    CPU caches and are freed before the next piece. A 1,000-item batch costs ~13% less CPU than in one piece
    (paired runs: bench/catalog_worker.py)."""
    if len(_KNOWN_PEOPLE) + len(new_people) > KNOWN_PEOPLE_LIMIT:
        _KNOWN_PEOPLE.clear()
    _KNOWN_PEOPLE.update(((name, tag), person_id) for name, tag, person_id in new_people)
    lib = str(library_id)
    pieces: dict[str, list[bytes]] = {}
    out = Payloads()
    people: dict[tuple[str, int], int] = {}
    lines: list[bytes] = []
    start = 0
    for chunk in chunks:
        items = catalog_pb2.WriteItemsRequest.FromString(chunk).items
        batch = [
            (Incoming(i, item, states[i], digests[i]), ids[i]) for i, item in enumerate(items, start)
        ]  # fmt: skip
        start += len(items)
        rows = flatten_fast(batch, lib)
        if rows is None:
            return None
        transposed = Transposed(rows)
        if not columns_ok(rows, transposed, check_nul=False):
            return None
        part = copy_payloads(rows, tables, transposed, _KNOWN_PEOPLE)
        for table, data in part.tables.items():
            pieces.setdefault(table, []).append(data)
        lines.append(part.credit_lines)
        index = [people.setdefault(key, len(people)) for key in part.people]
        out.credit_prefixes += part.credit_prefixes
        out.credit_people += [index[k] for k in part.credit_people]
    if start != len(ids):
        raise ValueError(f"{start} items for {len(ids)} ids")
    out.tables = {table: b"".join(data) for table, data in pieces.items()}
    out.credit_lines = b"".join(lines)
    out.people = list(people)
    # Every text value the column checks cover is in the payloads or the credits' people, where looking for a
    # NUL is cheaper than joining the columns again.
    if any(b"\x00" in data for data in (*out.tables.values(), out.credit_lines)) or "\x00" in "".join(
        chain(out.credit_prefixes, (name for name, _ in out.people))
    ):
        return None
    return out


def warm_up() -> bool:
    """Run in each new worker so the first real batch does not pay for imports."""
    return True

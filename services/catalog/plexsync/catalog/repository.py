"""Reads and the small writes of the catalog: libraries, path rules, items, search, collections, stats."""

from __future__ import annotations

import re
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

import psycopg
from google.protobuf.duration_pb2 import Duration
from google.protobuf.json_format import MessageToDict
from google.protobuf.timestamp_pb2 import Timestamp
from plexsync.catalog import ingest
from plexsync.catalog.store import Store
from plexsync.common import pagination, rule_syntax
from plexsync.common.audit import NO_AUDIT, AuditRecorder
from plexsync.common.errors import FailedPreconditionError, FieldViolation, InvalidArgumentError, NotFoundError
from plexsync.v1 import catalog_pb2, common_pb2

FNF = common_pb2.ITEM_STATE_FILE_NOT_FOUND
LIBRARY_KINDS = frozenset(v for v in common_pb2.LibraryKind.values() if v)
UPDATABLE_LIBRARY_FIELDS = (
    "sync_enabled",
    "refresh_interval",
    "remote_streaming_enabled",
    "realtime_enabled",
    "prune_excluded",
)
# 0 means the scheduler's default; anything else is the library's own interval.
MIN_REFRESH_SECONDS = 10
MAX_REFRESH_SECONDS = 366 * 24 * 3600
MAX_PATH_RULES = 500
MAX_QUERY = 500
_WINDOWS_ABS = re.compile(r"^[A-Za-z]:[\\/]")


def _ts(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def _dur_ms(ms: int | None) -> Duration | None:
    if ms is None:
        return None
    return Duration(seconds=ms // 1000, nanos=(ms % 1000) * 1_000_000)


def _opt(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


# ---------------------------------------------------------------------------------------------- libraries

_LIBRARY_SELECT = (
    "SELECT l.id, ms.server_id, l.plex_key, l.name, l.kind, l.sync_enabled, l.refresh_interval_seconds, "
    "l.remote_streaming_enabled, l.plex_uuid, l.agent, l.language, l.locations, l.removed, l.last_scan_at, "
    "l.last_deep_scan_at, l.created_at, l.updated_at, l.realtime_enabled, l.sync_rule, l.prune_excluded "
    "FROM libraries l JOIN media_sources ms ON ms.id = l.media_source_id"
)


def _library(row: Sequence[Any]) -> common_pb2.Library:
    return common_pb2.Library(
        id=str(row[0]),
        server_id=row[1],
        plex_key=row[2],
        name=row[3],
        kind=row[4],
        sync_enabled=row[5],
        refresh_interval=Duration(seconds=row[6]),
        remote_streaming_enabled=row[7],
        plex_uuid=row[8],
        agent=row[9],
        language=row[10],
        locations=row[11],
        removed=row[12],
        realtime_enabled=row[17],
        sync_rules=_sync_rules(row[18]),
        prune_excluded=row[19],
        **_opt(
            last_scan_time=_ts(row[13]),
            last_deep_scan_time=_ts(row[14]),
            create_time=_ts(row[15]),
            update_time=_ts(row[16]),
        ),
    )


def _sync_rules(expression: str) -> common_pb2.SyncRules:
    node = rule_syntax.parse(expression)  # stored canonical, so it parses
    rule = rule_syntax.to_proto(node) if node is not None else None
    return common_pb2.SyncRules(expression=expression, rule=rule)


def _server_id(value: str, field: str = "server_id") -> str:
    if not value:
        raise InvalidArgumentError.single(field, "is required")
    if len(value) > ingest.MAX_KEY or "\x00" in value:
        raise InvalidArgumentError.single(field, f"must be at most {ingest.MAX_KEY} characters")
    return value


def _is_absolute(path: str) -> bool:
    return path.startswith(("/", "\\\\")) or bool(_WINDOWS_ABS.match(path))


def _normalise_path(path: str) -> str:
    """Comparison form: forward slashes, no trailing separator, Windows paths case-folded."""
    windows = not path.startswith("/")
    norm = path.replace("\\", "/")
    while len(norm) > 1 and norm.endswith("/") and not norm.endswith(":/"):
        norm = norm[:-1]
    return norm.casefold() if windows else norm


class Repository:
    def __init__(self, store: Store, audit: AuditRecorder = NO_AUDIT) -> None:
        self.store = store
        self.audit = audit

    # ------------------------------------------------------------------------------------------ libraries

    async def _library_row(self, cur: psycopg.AsyncCursor[Any], library_id: uuid.UUID) -> common_pb2.Library:
        await cur.execute(_LIBRARY_SELECT + " WHERE l.id = %s", (library_id,))
        row = await cur.fetchone()
        if row is None:
            raise NotFoundError("library", str(library_id), resource_type="plexsync.v1.Library")
        return _library(row)

    async def get_library(self, library_id: str) -> common_pb2.Library:
        lid = ingest.parse_uuid(library_id, "library_id")
        assert lid is not None
        async with self.store.cursor() as cur:
            return await self._library_row(cur, lid)

    async def list_libraries(self, req: catalog_pb2.ListLibrariesRequest) -> catalog_pb2.ListLibrariesResponse:
        size = pagination.page_size(req.page_size)
        fp = pagination.filters_fingerprint("libraries", req.server_id, req.include_removed)
        after = pagination.decode_token(req.page_token, fp)
        where = ["TRUE"]
        params: list[Any] = []
        if req.server_id:
            where.append("ms.server_id = %s")
            params.append(_server_id(req.server_id))
        if not req.include_removed:
            where.append("NOT l.removed")
        if after:
            where.append("l.id > %s")
            params.append(_token_uuid(after[0]))
        async with self.store.cursor() as cur:
            await cur.execute(
                _LIBRARY_SELECT + " WHERE " + " AND ".join(where) + " ORDER BY l.id LIMIT %s", (*params, size + 1)
            )
            rows = await cur.fetchall()
        token = pagination.encode_token([str(rows[size - 1][0])], fp) if len(rows) > size else ""
        return catalog_pb2.ListLibrariesResponse(libraries=[_library(r) for r in rows[:size]], next_page_token=token)

    async def register_libraries(
        self, req: catalog_pb2.RegisterLibrariesRequest
    ) -> catalog_pb2.RegisterLibrariesResponse:
        server_id = _server_id(req.server_id)
        if not req.sections and not req.confirmed_empty:
            raise FailedPreconditionError(
                "no sections sent: that would mark every library of the server removed; send the server's sections, "
                "or set confirmed_empty after Plex confirmed it has none"
            )
        violations: list[FieldViolation] = []
        if len(req.server_name) > ingest.MAX_TITLE:
            violations.append(FieldViolation("server_name", f"must be at most {ingest.MAX_TITLE} characters"))
        keys: dict[str, int] = {}
        for i, s in enumerate(req.sections):
            p = f"sections[{i}]"
            if not s.plex_key:
                violations.append(FieldViolation(f"{p}.plex_key", "is required"))
            elif len(s.plex_key) > ingest.MAX_KEY:
                violations.append(FieldViolation(f"{p}.plex_key", f"must be at most {ingest.MAX_KEY} characters"))
            elif s.plex_key in keys:
                violations.append(FieldViolation(f"{p}.plex_key", f"duplicates sections[{keys[s.plex_key]}]"))
            keys[s.plex_key] = i
            if not s.name:
                violations.append(FieldViolation(f"{p}.name", "is required"))
            elif len(s.name) > ingest.MAX_TITLE:
                violations.append(FieldViolation(f"{p}.name", f"must be at most {ingest.MAX_TITLE} characters"))
            if s.kind not in LIBRARY_KINDS:
                violations.append(FieldViolation(f"{p}.kind", f"unknown or unspecified library kind {s.kind}"))
            for name in ("plex_uuid", "agent", "language"):
                if len(getattr(s, name)) > ingest.MAX_SHORT:
                    violations.append(FieldViolation(f"{p}.{name}", f"must be at most {ingest.MAX_SHORT} characters"))
            for j, loc in enumerate(s.locations):
                if not loc or len(loc) > ingest.MAX_URL:
                    violations.append(FieldViolation(f"{p}.locations[{j}]", "must be 1 to 4096 characters"))
        texts = [req.server_name, *(t for s in req.sections for t in (s.plex_key, s.name, *s.locations))]
        if any("\x00" in t for t in texts):
            violations.append(FieldViolation("sections", "must not contain NUL characters"))
        if violations:
            raise InvalidArgumentError(violations)
        added = updated = removed = 0
        changed: dict[str, list[str]] = {"added": [], "updated": [], "removed": []}
        async with self.store.transaction() as (cur, conn):
            await cur.execute(
                "INSERT INTO media_sources (server_id, name) VALUES (%s, %s) ON CONFLICT (server_id) DO UPDATE "
                "SET name = EXCLUDED.name, updated_at = now() WHERE media_sources.name IS DISTINCT FROM EXCLUDED.name",
                (server_id, req.server_name),
            )
            await cur.execute("SELECT id FROM media_sources WHERE server_id = %s FOR UPDATE", (server_id,))
            source_row = await cur.fetchone()
            assert source_row is not None
            source_id = source_row[0]
            await cur.execute(
                "SELECT plex_key, id, name, kind, plex_uuid, agent, language, locations, removed FROM libraries "
                "WHERE media_source_id = %s",
                (source_id,),
            )
            existing = {r[0]: r for r in await cur.fetchall()}
            for s in req.sections:
                values = (s.name, s.kind, s.plex_uuid, s.agent, s.language, list(s.locations))
                old = existing.get(s.plex_key)
                if old is None:
                    await cur.execute(
                        "INSERT INTO libraries (id, media_source_id, plex_key, name, kind, plex_uuid, agent, language, "
                        "locations) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                        (ingest.uuid7(), source_id, s.plex_key, *values),
                    )
                    added += 1
                    changed["added"].append(s.name)
                elif tuple(old[2:8]) != values or old[8]:
                    await cur.execute(
                        "UPDATE libraries SET name = %s, kind = %s, plex_uuid = %s, agent = %s, language = %s, "
                        "locations = %s, removed = false, updated_at = now() WHERE id = %s",
                        (*values, old[1]),
                    )
                    updated += 1
                    changed["updated"].append(s.name)
            gone = [r[1] for key, r in existing.items() if key not in keys and not r[8]]
            if gone:
                await cur.execute("UPDATE libraries SET removed = true, updated_at = now() WHERE id = ANY(%s)", (gone,))
                removed = len(gone)
                changed["removed"] = [r[2] for key, r in existing.items() if key not in keys and not r[8]]
            await cur.execute(_LIBRARY_SELECT + " WHERE l.media_source_id = %s ORDER BY l.id", (source_id,))
            libraries = [_library(r) for r in await cur.fetchall()]
            if added or updated or removed:
                await self.audit.record("libraries.register", "server", str(server_id), after=changed, session=conn)
        return catalog_pb2.RegisterLibrariesResponse(libraries=libraries, added=added, updated=updated, removed=removed)

    async def update_library(self, req: catalog_pb2.UpdateLibraryRequest) -> common_pb2.Library:
        lid = ingest.parse_uuid(req.library.id, "library.id")
        assert lid is not None
        paths = list(req.update_mask.paths)
        if not paths:
            raise InvalidArgumentError.single(
                "update_mask", f"name the fields to update: {', '.join(UPDATABLE_LIBRARY_FIELDS)}"
            )
        violations = [
            FieldViolation(f"update_mask.paths[{i}]", f"unknown or read-only field {p!r}; updatable: "
                           + ", ".join(UPDATABLE_LIBRARY_FIELDS))
            for i, p in enumerate(paths)
            if p not in UPDATABLE_LIBRARY_FIELDS
        ]  # fmt: skip
        sets: list[str] = []
        params: list[Any] = []
        if "sync_enabled" in paths:
            sets.append("sync_enabled = %s")
            params.append(req.library.sync_enabled)
        if "remote_streaming_enabled" in paths:
            sets.append("remote_streaming_enabled = %s")
            params.append(req.library.remote_streaming_enabled)
        if "realtime_enabled" in paths:
            sets.append("realtime_enabled = %s")
            params.append(req.library.realtime_enabled)
        if "prune_excluded" in paths:
            sets.append("prune_excluded = %s")
            params.append(req.library.prune_excluded)
        if "refresh_interval" in paths:
            d = req.library.refresh_interval
            seconds = d.seconds + d.nanos / 1e9
            if seconds != 0 and not MIN_REFRESH_SECONDS <= seconds <= MAX_REFRESH_SECONDS:
                violations.append(
                    FieldViolation(
                        "library.refresh_interval",
                        f"must be 0 (the scheduler's default) or between {MIN_REFRESH_SECONDS} seconds and 366 "
                        f"days, got {seconds:g}s",
                    )
                )
            sets.append("refresh_interval_seconds = %s")
            params.append(int(seconds))
        if violations:
            raise InvalidArgumentError(violations)
        async with self.store.transaction() as (cur, conn):
            before = await self._library_row(cur, lid)
            await cur.execute(
                "UPDATE libraries SET " + ", ".join(sets) + ", updated_at = now() WHERE id = %s", (*params, lid)
            )
            if cur.rowcount == 0:
                raise NotFoundError("library", str(lid), resource_type="plexsync.v1.Library")
            after = await self._library_row(cur, lid)
            await self.audit.record(
                "library.update",
                "library",
                str(lid),
                before=_library_audit(before, paths),
                after=_library_audit(after, paths),
                session=conn,
            )
        return after

    async def set_library_rules(self, req: catalog_pb2.SetLibraryRulesRequest) -> common_pb2.Library:
        """Validate the rule (text or structured) and store its canonical text with the library."""
        lid = ingest.parse_uuid(req.library_id, "library_id")
        assert lid is not None
        if req.expression and req.HasField("rule"):
            raise InvalidArgumentError.single("rule", "set expression or rule, not both")
        try:
            node = rule_syntax.from_proto(req.rule) if req.HasField("rule") else rule_syntax.parse(req.expression)
        except rule_syntax.RuleSyntaxError as exc:
            if req.HasField("rule"):  # the message names the offending part of the tree
                raise InvalidArgumentError.single("rule", exc.reason) from None
            raise InvalidArgumentError.single("expression", str(exc)) from None
        expression = rule_syntax.render(node) if node is not None else ""
        async with self.store.transaction() as (cur, conn):
            before = await self._library_row(cur, lid)
            await cur.execute(
                "UPDATE libraries SET sync_rule = %s, updated_at = now() WHERE id = %s", (expression, lid)
            )
            after = await self._library_row(cur, lid)
            await self.audit.record(
                "library.set_rules",
                "library",
                str(lid),
                before={"expression": before.sync_rules.expression},
                after={"expression": expression},
                session=conn,
            )
        return after

    # -------------------------------------------------------------------------------------- path rules

    async def _source_id(self, cur: psycopg.AsyncCursor[Any], server_id: str) -> uuid.UUID:
        await cur.execute("SELECT id FROM media_sources WHERE server_id = %s", (server_id,))
        row = await cur.fetchone()
        if row is None:
            raise NotFoundError(
                "server",
                server_id,
                "the catalog learns a server when its libraries are registered; run ScannerService.SyncServer "
                "(`plexsync servers sync SERVER_ID`) first",
                resource_type="plexsync.v1.Server",
            )
        source_id: uuid.UUID = row[0]
        return source_id

    async def set_path_replacements(
        self, req: catalog_pb2.SetPathReplacementsRequest
    ) -> list[common_pb2.PathReplacement]:
        server_id = _server_id(req.server_id)
        violations: list[FieldViolation] = []
        if len(req.rules) > MAX_PATH_RULES:
            raise InvalidArgumentError.single("rules", f"at most {MAX_PATH_RULES} rules")
        seen: dict[str, int] = {}
        for i, rule in enumerate(req.rules):
            for name in ("plex_path", "local_path"):
                value = getattr(rule, name)
                path = f"rules[{i}].{name}"
                if not value.strip():
                    violations.append(FieldViolation(path, "is required"))
                elif len(value) > ingest.MAX_URL or "\x00" in value:
                    violations.append(FieldViolation(path, "must be at most 4096 characters, without NUL"))
                elif not _is_absolute(value):
                    violations.append(
                        FieldViolation(
                            path,
                            f"must be an absolute path such as /media, C:\\media or \\\\server\\share, got {value!r}",
                        )
                    )
            norm = _normalise_path(rule.plex_path)
            if rule.plex_path and norm in seen:
                violations.append(FieldViolation(f"rules[{i}].plex_path", f"duplicates rules[{seen[norm]}].plex_path"))
            seen.setdefault(norm, i)
        if violations:
            raise InvalidArgumentError(violations)
        rules = [common_pb2.PathReplacement(plex_path=r.plex_path, local_path=r.local_path) for r in req.rules]
        async with self.store.transaction() as (cur, conn):
            source_id = await self._source_id(cur, server_id)
            await cur.execute(
                "SELECT plex_path, local_path FROM path_replacements WHERE media_source_id = %s ORDER BY position",
                (source_id,),
            )
            before = [{"plex_path": r[0], "local_path": r[1]} for r in await cur.fetchall()]
            await cur.execute("DELETE FROM path_replacements WHERE media_source_id = %s", (source_id,))
            if req.rules:
                await cur.executemany(
                    "INSERT INTO path_replacements (media_source_id, position, plex_path, local_path) "
                    "VALUES (%s, %s, %s, %s)",
                    [(source_id, i, r.plex_path, r.local_path) for i, r in enumerate(req.rules)],
                )
            await self.audit.record(
                "path_rules.set",
                "server",
                str(server_id),
                before={"rules": before},
                after={"rules": [MessageToDict(r, preserving_proto_field_name=True) for r in rules]},
                session=conn,
            )
        return rules

    async def list_path_replacements(
        self, req: catalog_pb2.ListPathReplacementsRequest
    ) -> catalog_pb2.ListPathReplacementsResponse:
        server_id = _server_id(req.server_id)
        size = pagination.page_size(req.page_size)
        fp = pagination.filters_fingerprint("paths", server_id)
        after = pagination.decode_token(req.page_token, fp)
        start = _token_int(after[0]) if after else -1
        async with self.store.cursor() as cur:
            source_id = await self._source_id(cur, server_id)
            await cur.execute(
                "SELECT position, plex_path, local_path FROM path_replacements WHERE media_source_id = %s "
                "AND position > %s ORDER BY position LIMIT %s",
                (source_id, start, size + 1),
            )
            rows = await cur.fetchall()
        token = pagination.encode_token([rows[size - 1][0]], fp) if len(rows) > size else ""
        return catalog_pb2.ListPathReplacementsResponse(
            rules=[common_pb2.PathReplacement(plex_path=r[1], local_path=r[2]) for r in rows[:size]],
            next_page_token=token,
        )

    # ------------------------------------------------------------------------------------------ etags

    async def item_etags(self, req: catalog_pb2.GetItemEtagsRequest, chunk: int) -> AsyncIterator[list[Any]]:
        lid = ingest.parse_uuid(req.library_id, "library_id")
        kinds = list(req.kinds)
        for i, k in enumerate(kinds):
            if k not in ingest.ITEM_KINDS:
                raise InvalidArgumentError.single(f"kinds[{i}]", f"unknown or unspecified item kind {k}")
        async with self.store.cursor() as cur:
            await self._library_row(cur, lid)  # type: ignore[arg-type]
        last = ""
        kind_filter = " AND kind = ANY(%(kinds)s::int2[])" if kinds else ""
        while True:
            async with self.store.cursor() as cur:
                await cur.execute(
                    "SELECT rating_key, etag, kind, CASE WHEN missing_since IS NULL THEN state ELSE 4 END FROM items "
                    "WHERE library_id = %(lib)s AND rating_key > %(last)s" + kind_filter + " ORDER BY rating_key "
                    "LIMIT %(n)s",
                    {"lib": lid, "last": last, "kinds": kinds, "n": chunk},
                )
                rows = await cur.fetchall()
            if not rows:
                return
            yield rows
            if len(rows) < chunk:
                return
            last = rows[-1][0]

    # ------------------------------------------------------------------------------------------ items

    async def get_item(self, item_id: str) -> common_pb2.Item:
        iid = ingest.parse_uuid(item_id, "item_id")
        async with self.store.cursor() as cur:
            items = await self._load_items(cur, "i.id = %s", [iid], full=True)
        if not items:
            raise NotFoundError("item", str(iid), resource_type="plexsync.v1.Item")
        return items[0]

    async def list_items(self, req: catalog_pb2.ListItemsRequest) -> catalog_pb2.ListItemsResponse:
        size = pagination.page_size(req.page_size)
        if req.view not in catalog_pb2.ItemView.values():
            raise InvalidArgumentError.single("view", f"unknown view {req.view}")
        where: list[str] = []
        params: list[Any] = []
        lid = ingest.parse_uuid(req.library_id, "library_id", required=False)
        pid = ingest.parse_uuid(req.parent_id, "parent_id", required=False)
        if req.kind and req.kind not in ingest.ITEM_KINDS:
            raise InvalidArgumentError.single("kind", f"unknown item kind {req.kind}")
        if req.state and req.state not in common_pb2.ItemState.values():
            raise InvalidArgumentError.single("state", f"unknown item state {req.state}")
        since = ingest.to_datetime(req.updated_since)
        fp = pagination.filters_fingerprint("items", lid, pid, req.kind, req.state, since)
        after = pagination.decode_token(req.page_token, fp)
        async with self.store.cursor() as cur:
            if lid is not None:
                await self._library_row(cur, lid)
                where.append("i.library_id = %s")
                params.append(lid)
            if pid is not None:
                await cur.execute("SELECT 1 FROM items WHERE id = %s", (pid,))
                if await cur.fetchone() is None:
                    raise NotFoundError("item", str(pid), resource_type="plexsync.v1.Item")
                where.append("i.parent_id = %s")
                params.append(pid)
            if req.kind:
                where.append("i.kind = %s")
                params.append(req.kind)
            if req.state == FNF:
                where.append("i.missing_since IS NOT NULL")
            elif req.state:
                where.append("i.missing_since IS NULL AND i.state = %s")
                params.append(req.state)
            if since is not None:
                where.append("i.updated_at >= %s")
                params.append(since)
            if after:
                where.append("i.id > %s")
                params.append(_token_uuid(after[0]))
            clause = " AND ".join(where) or "TRUE"
            items = await self._load_items(
                cur,
                clause + " ORDER BY i.id LIMIT %s",
                [*params, size + 1],
                full=req.view == catalog_pb2.ITEM_VIEW_FULL,
            )
        token = pagination.encode_token([items[size - 1].id], fp) if len(items) > size else ""
        return catalog_pb2.ListItemsResponse(items=items[:size], next_page_token=token)

    async def _load_items(
        self, cur: psycopg.AsyncCursor[Any], clause: str, params: Sequence[Any], *, full: bool
    ) -> list[common_pb2.Item]:
        await cur.execute(
            "SELECT i.id, i.library_id, i.kind, i.rating_key, i.parent_rating_key, i.parent_id, i.etag, "
            "CASE WHEN i.missing_since IS NULL THEN i.state ELSE 4 END, i.title, i.sort_title, i.original_title, "
            "i.plot, i.tagline, i.year, i.release_date, i.content_rating, i.index, i.parent_index, i.duration_ms, "
            "i.rating, i.audience_rating, i.child_count, i.leaf_count, i.plex_guid, i.plex_added_at, "
            "i.plex_updated_at, i.first_seen_at, CASE WHEN i.missing_since IS NULL "
            "THEN GREATEST(i.last_seen_at, l.last_scan_at) ELSE i.last_seen_at END, i.updated_at "
            "FROM items i JOIN libraries l ON l.id = i.library_id WHERE " + clause,
            params,
        )
        rows = await cur.fetchall()
        items: list[common_pb2.Item] = []
        for r in rows:
            item = common_pb2.Item(
                id=str(r[0]), library_id=str(r[1]), kind=r[2], rating_key=r[3], parent_rating_key=r[4],
                parent_id=str(r[5]) if r[5] else "", etag=r[6], state=r[7], title=r[8], sort_title=r[9],
                original_title=r[10], plot=r[11], tagline=r[12], year=r[13],
                release_date=r[14].isoformat() if r[14] else "", content_rating=r[15], index=r[16],
                parent_index=r[17], duration=_dur_ms(r[18]), rating=r[19], audience_rating=r[20],
                child_count=r[21], leaf_count=r[22], plex_guid=r[23],
                **_opt(plex_added_at=_ts(r[24]), plex_updated_at=_ts(r[25]), first_seen_at=_ts(r[26]),
                       last_seen_at=_ts(r[27]), update_time=_ts(r[28])),
            )  # fmt: skip
            items.append(item)
        if full and items:
            await self._attach_relationships(cur, items, [r[0] for r in rows])
        return items

    async def _attach_relationships(
        self, cur: psycopg.AsyncCursor[Any], items: list[common_pb2.Item], ids: list[uuid.UUID]
    ) -> None:
        by_id = {iid: item for iid, item in zip(ids, items, strict=True)}
        await cur.execute(
            "SELECT id, studios, genres, labels, countries, networks, guids, artwork FROM items WHERE id = ANY(%s)",
            (ids,),
        )
        for r in await cur.fetchall():
            item = by_id[r[0]]
            item.studios.extend(r[1])
            item.genres.extend(r[2])
            item.labels.extend(r[3])
            item.countries.extend(r[4])
            item.networks.extend(r[5])
            for g in r[6]:
                item.guids.add(uri=g["uri"], provider=g["provider"], external_id=g["external_id"])
            for a in r[7]:
                seconds = a["updated_at"]
                updated = None if seconds is None else Timestamp(seconds=seconds, nanos=a.get("updated_nanos", 0))
                item.artwork.add(kind=a["kind"], url=a["url"], source=a["source"], **_opt(updated_at=updated))
        await cur.execute(
            "SELECT c.item_id, c.role, p.name, c.character, c.position, c.thumb_url, p.plex_tag_id FROM credits c "
            "JOIN people p ON p.id = c.person_id WHERE c.item_id = ANY(%s) ORDER BY c.item_id, c.role, c.position",
            (ids,),
        )
        for r in await cur.fetchall():
            by_id[r[0]].credits.add(role=r[1], name=r[2], character=r[3], order=r[4], thumb_url=r[5], plex_tag_id=r[6])
        await cur.execute(
            "SELECT item_id, plex_media_id, duration_ms, bitrate, width, height, aspect_ratio, audio_channels, "
            "audio_codec, video_codec, video_resolution, container, video_frame_rate, video_profile "
            "FROM media_versions WHERE item_id = ANY(%s) ORDER BY item_id, position",
            (ids,),
        )
        versions: dict[tuple[uuid.UUID, int], common_pb2.MediaVersion] = {}
        for r in await cur.fetchall():
            versions[(r[0], r[1])] = by_id[r[0]].media.add(
                plex_media_id=r[1], duration=_dur_ms(r[2]), bitrate=r[3], width=r[4], height=r[5],
                aspect_ratio=r[6], audio_channels=r[7], audio_codec=r[8], video_codec=r[9],
                video_resolution=r[10], container=r[11], video_frame_rate=r[12], video_profile=r[13],
            )  # fmt: skip
        await cur.execute(
            "SELECT item_id, plex_media_id, plex_part_id, plex_key, plex_path, local_path, size_bytes, duration_ms, "
            "container, video_profile, audio_profile, state FROM media_parts WHERE item_id = ANY(%s) "
            "ORDER BY item_id, plex_media_id, position",
            (ids,),
        )
        parts: dict[tuple[uuid.UUID, int, int], common_pb2.MediaPart] = {}
        for r in await cur.fetchall():
            parts[(r[0], r[1], r[2])] = versions[(r[0], r[1])].parts.add(
                plex_part_id=r[2], plex_key=r[3], plex_path=r[4], local_path=r[5], size_bytes=r[6],
                duration=_dur_ms(r[7]), container=r[8], video_profile=r[9], audio_profile=r[10], state=r[11],
            )  # fmt: skip
        await cur.execute(
            "SELECT item_id, plex_media_id, plex_part_id, plex_stream_id, kind, index, codec, language, "
            "language_code, title, display_title, is_default, forced, width, height, channels, bitrate, profile, "
            "frame_rate, audio_channel_layout, external_key FROM media_streams WHERE item_id = ANY(%s) "
            "ORDER BY item_id, plex_media_id, plex_part_id, position",
            (ids,),
        )
        for r in await cur.fetchall():
            parts[(r[0], r[1], r[2])].streams.add(
                plex_stream_id=r[3], kind=r[4], index=r[5], codec=r[6], language=r[7], language_code=r[8],
                title=r[9], display_title=r[10], is_default=r[11], forced=r[12], width=r[13], height=r[14],
                channels=r[15], bitrate=r[16], profile=r[17], frame_rate=r[18], audio_channel_layout=r[19],
                external_key=r[20],
            )  # fmt: skip
        await cur.execute(
            "SELECT item_id, index, title, start_ms, end_ms FROM chapters WHERE item_id = ANY(%s) "
            "ORDER BY item_id, index",
            (ids,),
        )
        for r in await cur.fetchall():
            by_id[r[0]].chapters.add(index=r[1], title=r[2], start=_dur_ms(r[3]), end=_dur_ms(r[4]))

    # ------------------------------------------------------------------------------------------ search

    async def search(self, req: catalog_pb2.SearchItemsRequest) -> catalog_pb2.SearchItemsResponse:
        text = req.query.strip()
        if not text:
            raise InvalidArgumentError.single("query", "is required")
        if len(text) > MAX_QUERY:
            raise InvalidArgumentError.single("query", f"must be at most {MAX_QUERY} characters")
        words = ingest.search_words(text.casefold())
        if not words:
            raise InvalidArgumentError.single("query", "must contain at least one letter or digit")
        size = pagination.page_size(req.page_size, default=25, maximum=200)
        lid = ingest.parse_uuid(req.library_id, "library_id", required=False)
        kinds = list(req.kinds)
        for i, k in enumerate(kinds):
            if k not in ingest.ITEM_KINDS:
                raise InvalidArgumentError.single(f"kinds[{i}]", f"unknown or unspecified item kind {k}")
        fp = pagination.filters_fingerprint("search", text, lid, sorted(kinds))
        after = pagination.decode_token(req.page_token, fp)
        offset = _token_int(after[0]) if after else 0
        folded = " ".join(words)
        params: dict[str, Any] = {
            # A tsquery literal of the same words the writer stored (ingest.search_vector); they cannot hold
            # quotes or backslashes. Each word matches as a prefix.
            "tsq": " & ".join(f"'{w}':*" for w in words),
            "folded": folded,
            "like": "%" + folded.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%",
            "lib": lid,
            "kinds": kinds,
            "limit": size + 1,
            "offset": offset,
        }
        filters = ""
        if lid is not None:
            filters += " AND i.library_id = %(lib)s"
        if kinds:
            filters += " AND i.kind = ANY(%(kinds)s::int2[])"
        # Ranked full-text match (prefix per word, title weighted over people over genres, exact title first);
        # when it finds nothing, a substring match on titles (catches words inside unsegmented scripts, e.g.
        # part of a Japanese title) ranked by position.
        matched = (
            "ts_filter(i.search_vector, '{a}') @@ q.q OR i.search_title LIKE %(like)s, "
            "ts_filter(i.search_vector, '{b}') @@ q.q, ts_filter(i.search_vector, '{c}') @@ q.q"
        )
        ranked = (
            "WITH q AS (SELECT %(tsq)s::tsquery AS q) "
            "SELECT i.id, (ts_rank(i.search_vector, q.q) + CASE WHEN i.search_title = %(folded)s THEN 1 ELSE 0 END"
            ")::float8 AS score, " + matched + " FROM items i, q WHERE i.search_vector @@ q.q" + filters
            + " ORDER BY score DESC, i.id LIMIT %(limit)s OFFSET %(offset)s"
        )  # fmt: skip
        substring = (
            "WITH q AS (SELECT %(tsq)s::tsquery AS q) "
            "SELECT i.id, (0.5 / (1 + strpos(i.search_title, %(folded)s)))::float8 AS score, " + matched
            + " FROM items i, q WHERE i.search_title LIKE %(like)s" + filters
            + " ORDER BY score DESC, i.id LIMIT %(limit)s OFFSET %(offset)s"
        )  # fmt: skip
        async with self.store.cursor() as cur:
            if lid is not None:
                await self._library_row(cur, lid)
            mode = "substring" if after and after[1:] == ["substring"] else "ranked"
            hits: list[Any] = []
            if mode == "ranked":
                await cur.execute(ranked, params)
                hits = await cur.fetchall()
                if not hits and offset == 0:
                    mode = "substring"
            if mode == "substring":
                await cur.execute(substring, params)
                hits = await cur.fetchall()
            page = hits[:size]
            items = await self._load_items(cur, "i.id = ANY(%s)", [[h[0] for h in page]], full=False)
        by_id = {item.id: item for item in items}
        results = []
        for h in page:
            fields = [name for name, flag in zip(("title", "people", "genre"), h[2:5], strict=True) if flag]
            results.append(catalog_pb2.SearchResult(item=by_id[str(h[0])], score=h[1], matched_fields=fields))
        token = pagination.encode_token([offset + size, mode], fp) if len(hits) > size else ""
        return catalog_pb2.SearchItemsResponse(results=results, next_page_token=token)

    # ------------------------------------------------------------------------------------ collections

    async def list_collections(self, req: catalog_pb2.ListCollectionsRequest) -> catalog_pb2.ListCollectionsResponse:
        size = pagination.page_size(req.page_size)
        lid = ingest.parse_uuid(req.library_id, "library_id", required=False)
        fp = pagination.filters_fingerprint("collections", lid)
        after = pagination.decode_token(req.page_token, fp)
        where = ["TRUE"]
        params: list[Any] = []
        if lid is not None:
            where.append("library_id = %s")
            params.append(lid)
        if after:
            where.append("id > %s")
            params.append(_token_uuid(after[0]))
        async with self.store.cursor() as cur:
            if lid is not None:
                await self._library_row(cur, lid)
            await cur.execute(
                "SELECT id, library_id, rating_key, title, sort_title, summary, smart, child_count, etag, artwork, "
                "plex_added_at, plex_updated_at FROM collections WHERE "
                + " AND ".join(where)
                + " ORDER BY id LIMIT %s",
                (*params, size + 1),
            )
            rows = (await cur.fetchall())[: size + 1]
            ids = [r[0] for r in rows[:size]]
            members: dict[uuid.UUID, list[str]] = defaultdict(list)
            if ids:
                await cur.execute(
                    "SELECT collection_id, rating_key FROM collection_members WHERE collection_id = ANY(%s) "
                    "ORDER BY collection_id, position",
                    (ids,),
                )
                for cid, key in await cur.fetchall():
                    members[cid].append(key)
        collections = []
        for r in rows[:size]:
            art = [
                common_pb2.Artwork(
                    kind=a["kind"], url=a["url"], source=a["source"],
                    **_opt(updated_at=Timestamp(seconds=a["updated_at"]) if a.get("updated_at") else None),
                )
                for a in r[9]
            ]  # fmt: skip
            collections.append(
                common_pb2.Collection(
                    id=str(r[0]), library_id=str(r[1]), rating_key=r[2], title=r[3], sort_title=r[4], summary=r[5],
                    smart=r[6], child_count=r[7], etag=r[8], artwork=art, member_rating_keys=members[r[0]],
                    **_opt(plex_added_at=_ts(r[10]), plex_updated_at=_ts(r[11])),
                )
            )  # fmt: skip
        token = pagination.encode_token([str(rows[size - 1][0])], fp) if len(rows) > size else ""
        return catalog_pb2.ListCollectionsResponse(collections=collections, next_page_token=token)

    async def list_networks(self, req: catalog_pb2.ListNetworksRequest) -> catalog_pb2.ListNetworksResponse:
        size = pagination.page_size(req.page_size)
        lid = ingest.parse_uuid(req.library_id, "library_id", required=False)
        fp = pagination.filters_fingerprint("networks", lid)
        after = pagination.decode_token(req.page_token, fp)
        params: dict[str, Any] = {"lib": lid, "limit": size + 1, "show": common_pb2.ITEM_KIND_SHOW}
        having = ""
        if after:
            if len(after) != 2 or not isinstance(after[0], str):
                raise InvalidArgumentError.single("page_token", "is not a token returned by ListNetworks")
            params["after_name"] = after[0]
            params["after_lib"] = _token_uuid(after[1])
            having = " HAVING (n.name, i.library_id) > (%(after_name)s, %(after_lib)s)"
        async with self.store.cursor() as cur:
            if lid is not None:
                await self._library_row(cur, lid)
            await cur.execute(
                "SELECT n.name, i.library_id, count(*) FROM items i CROSS JOIN LATERAL unnest(i.networks) AS n(name) "
                "WHERE i.networks <> '{}'::text[] AND i.kind = %(show)s AND i.missing_since IS NULL"
                + (" AND i.library_id = %(lib)s" if lid is not None else "")
                + " GROUP BY n.name, i.library_id"
                + having
                + " ORDER BY n.name, i.library_id LIMIT %(limit)s",
                params,
            )
            rows = await cur.fetchall()
        token = pagination.encode_token([rows[size - 1][0], str(rows[size - 1][1])], fp) if len(rows) > size else ""
        return catalog_pb2.ListNetworksResponse(
            networks=[common_pb2.Network(name=r[0], library_id=str(r[1]), show_count=r[2]) for r in rows[:size]],
            next_page_token=token,
        )

    async def library_stats(self, req: catalog_pb2.GetLibraryStatsRequest) -> catalog_pb2.GetLibraryStatsResponse:
        lid = ingest.parse_uuid(req.library_id, "library_id", required=False)
        where = "library_id = %(lib)s" if lid is not None else "TRUE"
        async with self.store.cursor() as cur:
            if lid is not None:
                await self._library_row(cur, lid)
            await cur.execute(
                "SELECT kind, CASE WHEN missing_since IS NULL THEN state ELSE 4 END AS st, count(*) FROM items "
                "WHERE " + where + " GROUP BY 1, 2 ORDER BY 1, 2",
                {"lib": lid},
            )
            counts = await cur.fetchall()
            await cur.execute("SELECT count(*) FROM collections WHERE " + where, {"lib": lid})
            collections_row = await cur.fetchone()
            await cur.execute(
                "SELECT last_scan_at, last_scan_duration_ms FROM libraries WHERE "
                + ("id = %(lib)s" if lid is not None else "last_scan_at IS NOT NULL")
                + " ORDER BY last_scan_at DESC NULLS LAST LIMIT 1",
                {"lib": lid},
            )
            last = await cur.fetchone()
        response = catalog_pb2.GetLibraryStatsResponse(
            counts=[catalog_pb2.KindStateCount(kind=k, state=s, count=n) for k, s, n in counts],
            total=sum(int(r[2]) for r in counts),
            collections=int(collections_row[0]) if collections_row else 0,
        )
        if last is not None and last[0] is not None:
            response.last_scan_time.FromDatetime(last[0])
            if last[1] is not None:
                response.last_scan_duration.FromMilliseconds(int(last[1]))
        return response


def _token_uuid(value: Any) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise InvalidArgumentError.single("page_token", "is not a token returned by this method") from None


def _token_int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < -1:
        raise InvalidArgumentError.single("page_token", "is not a token returned by this method")
    return value


def _library_audit(library: common_pb2.Library, paths: list[str]) -> dict[str, Any]:
    """The library's identity and the fields an update named, as the audit log keeps them."""
    fields = MessageToDict(library, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    kept = {"id", "name", "server_id", *paths}
    return {k: v for k, v in fields.items() if k in kept}

"""The collector's scrub processor removes every token-bearing attribute. No otelcol-contrib binary can be had
here (no pip/npm package ships one), so this applies the processor's own OTTL statements, read from the collector
config, to spans, span events, logs and data points that carry tokens, and checks every pipeline runs it."""

from __future__ import annotations

import re
from typing import Any

import yaml

from tests.unit.deploy.rendering import K8S

CONFIG = yaml.safe_load((K8S / "observability" / "config.yaml").read_text())
SCRUB = CONFIG["processors"]["transform/scrub"]
TOKEN = "s3cr3t-PlexToken-123"
CALL = re.compile(r"^(\w+)\((.*)\)$")
ARG = re.compile(r'"((?:[^"\\]|\\.)*)"|([\w.]+(?:\["[^"]+"\])?)')


def _ottl_string(raw: str) -> str:
    """An OTTL string literal's value (after the collector's `$$` escape of `$`), as a Python regex/replacement."""
    return raw.encode().decode("unicode_escape").replace("$$", "$")


def _replacement(text: str) -> str:
    return re.sub(r"\$\{(\d+)\}", r"\\g<\1>", text)


def _apply(statement: str, record: dict[str, Any]) -> None:
    match = CALL.match(statement.strip())
    assert match, statement
    function, args = match.group(1), [s if s else p for s, p in ARG.findall(match.group(2))]
    attributes: dict[str, Any] = record.setdefault("attributes", {})
    if function == "delete_key":
        attributes.pop(_ottl_string(args[1]), None)
    elif function == "delete_matching_keys":
        matching = re.compile(_ottl_string(args[1]))
        for name in [k for k in attributes if matching.fullmatch(k)]:
            del attributes[name]
    elif function == "replace_pattern":
        target, pattern, replacement = args[0], _ottl_string(args[1]), _replacement(_ottl_string(args[2]))
        field = re.fullmatch(r'attributes\["([^"]+)"\]', target)
        holder, name = (attributes, field.group(1)) if field else (record, target)
        if isinstance(holder.get(name), str):
            holder[name] = re.sub(pattern, replacement, holder[name])
    elif function == "replace_all_patterns":
        assert args[1] == "value", statement
        pattern, replacement = _ottl_string(args[2]), _replacement(_ottl_string(args[3]))
        for name, value in attributes.items():
            if isinstance(value, str):
                attributes[name] = re.sub(pattern, replacement, value)
    else:
        raise AssertionError(f"the test does not know OTTL function {function}: teach it before using it")


def _scrub(signal: str, context: str, record: dict[str, Any]) -> dict[str, Any]:
    for group in SCRUB[f"{signal}_statements"]:
        if group["context"] == context:
            for statement in group["statements"]:
                _apply(statement, record)
    return record


def _leaks(record: dict[str, Any]) -> list[str]:
    return [f"{k}={v}" for k, v in {**record.get("attributes", {}), **record}.items() if TOKEN in str(v)]


def test_every_pipeline_runs_the_scrub_processor_before_exporting() -> None:
    pipelines = CONFIG["service"]["pipelines"]
    assert set(pipelines) == {"traces", "metrics", "logs"}
    for name, pipeline in pipelines.items():
        assert "transform/scrub" in pipeline["processors"], name
        assert pipeline["processors"][-1] == "batch", name
    overrides = [K8S / "observability" / "exporters.yaml", K8S / "overlays" / "prod" / "otel-exporters.yaml"]
    for path in overrides:  # the files merged over config.yaml replace pipelines: they must keep the scrub
        for name, pipeline in yaml.safe_load(path.read_text())["service"]["pipelines"].items():
            assert "transform/scrub" in pipeline["processors"], (path.name, name)
    assert SCRUB["error_mode"] == "ignore"  # a statement on a missing attribute must not drop the span


def test_spans_that_carry_tokens_come_out_without_them() -> None:
    span = {
        "name": f"GET /library/sections?X-Plex-Token={TOKEN}",
        "attributes": {
            "url.full": f"https://10.0.0.5:32400/library/sections/1/all?type=1&X-Plex-Token={TOKEN}",
            "http.url": f"http://plex.local:32400/identity?X-Plex-Token={TOKEN}",
            "url.query": f"X-Plex-Token={TOKEN}",
            "http.request.header.x-plex-token": TOKEN,
            "X-Plex-Token": TOKEN,
            "plex_token": TOKEN,
            "db.statement": f"SELECT 1 -- x-plex-token: {TOKEN}",
            "exception.message": f"connect failed for https://h/?a=1&x-plex-token={TOKEN}&b=2",
            "plexsync.library.kind": "movie",
        },
    }
    scrubbed = _scrub("trace", "span", span)
    assert _leaks(scrubbed) == []
    assert scrubbed["attributes"]["url.full"] == "https://10.0.0.5:32400/library/sections/1/all"
    assert scrubbed["attributes"]["plexsync.library.kind"] == "movie"  # the rest stays
    assert "REDACTED" in scrubbed["attributes"]["exception.message"]
    assert scrubbed["name"] == "GET /library/sections"

    event = _scrub("trace", "spanevent", {"attributes": {"exception.stacktrace": f"X-Plex-Token={TOKEN}"}})
    resource = _scrub("trace", "resource", {"attributes": {"plex.token": TOKEN, "service.name": "scanner"}})
    assert _leaks(event) == [] and _leaks(resource) == [] and resource["attributes"] == {"service.name": "scanner"}


def test_logs_and_data_points_that_carry_tokens_come_out_without_them() -> None:
    log = {
        "body": f'request failed: {{"X-Plex-Token": "{TOKEN}", "status": 401}}',
        "attributes": {"url.full": f"https://plex.tv/api/v2/user?X-Plex-Token={TOKEN}", "x_plex_token": TOKEN},
    }
    scrubbed = _scrub("log", "log", log)
    assert _leaks(scrubbed) == [] and '"status": 401' in scrubbed["body"]
    point = _scrub("metric", "datapoint", {"attributes": {"url.full": f"https://h/?X-Plex-Token={TOKEN}"}})
    assert _leaks(point) == []

"""docs/api.md is generated from the protos' comments: it must be current, and every message and field commented."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def gen() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_api_docs", ROOT / "tools" / "gen_api_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_api_reference_is_current(gen: ModuleType) -> None:
    expected = gen.render(gen.descriptor_set())
    assert (ROOT / "docs" / "api.md").read_text() == expected, "docs/api.md is stale: run `make proto`"


def test_every_message_and_field_has_a_comment(gen: ModuleType) -> None:
    missing = set(gen.undocumented(gen.descriptor_set()))
    known = {line for line in gen.UNDOCUMENTED.read_text().splitlines() if line and not line.startswith("#")}
    new = sorted(missing - known)
    assert not new, f"{len(new)} messages/fields have no comment (say what each means in the proto): {new[:20]}"
    fixed = sorted(known - missing)
    assert not fixed, f"commented now: remove from {gen.UNDOCUMENTED.name}: {fixed[:20]}"


def test_comments_reach_the_reference(gen: ModuleType) -> None:
    text = gen.render(gen.descriptor_set())
    # A service, a method, a message, a field and an enum value, each with its comment from the protos.
    assert "### ScannerService" in text and "Runs scans: pages through Plex" in text
    assert "| `SyncServer` | [SyncServerRequest](#plexsyncv1syncserverrequest) |" in text
    assert '<a id="plexsyncv1syncserverrequest"></a>' in text
    assert "| `sample_size` | int32 | 3 | Samples of kept and of excluded items to return" in text
    assert "| `ITEM_STATE_FILE_NOT_FOUND` |" in text

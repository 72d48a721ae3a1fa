"""`make demo` end to end on a fresh clone: it exits 0, its summary matches fakeplex, nothing is left running."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from plexsync.devstack.demo import DEMO_SIZES, expected_library
from plexsync.devstack.infra import REPO_ROOT


@pytest.mark.slow
def test_make_demo_on_a_fresh_clone(tmp_path: Path) -> None:
    if shutil.which("git") is None or not (REPO_ROOT / ".git").exists():
        pytest.fail("this test needs the repository as a git checkout (it clones it)")
    clone = tmp_path / "plexsync"
    subprocess.run(["git", "clone", "-q", str(REPO_ROOT), str(clone)], check=True)
    # A fresh machine: no servers given, no session state; the demo starts its own embedded ones.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PLEXSYNC_", "DATABASE_URL", "NATS_URL", "OTEL_"))}
    env["COLUMNS"] = "200"
    result = subprocess.run(
        ["make", "demo"], cwd=clone, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=900
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]

    expected, _ = expected_library(DEMO_SIZES)
    match = re.search(r"The catalog matches fakeplex: (\{.*?\})", output, re.S)
    assert match, output[-4000:]
    summary = dict(re.findall(r"'(\w+)': (\d+)", match.group(1)))
    assert {k: int(v) for k, v in summary.items()} == expected
    assert re.search(r"only [1-4] fetched full metadata", output), "the incremental sync fetched more than the changes"
    assert "Stopped everything the demo started" in output

    state = (clone / ".dev" / "demo" / "stack.json").read_text()
    for pid in map(int, re.findall(r'"(?:postgres_pid|nats_pid)": (\d+)', state)):
        assert pid == 0
    leftovers = subprocess.run(["pgrep", "-f", str(clone)], capture_output=True, text=True).stdout.split()
    assert leftovers == [], f"processes left running: {leftovers}"

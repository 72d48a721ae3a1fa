"""``python -m plexsync.fakeplex`` starts, writes its ready file, serves, and stops on SIGTERM."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx


def test_cli_subprocess(tmp_path: Path) -> None:
    ready = tmp_path / "ready.json"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "plexsync.fakeplex",
            "--port",
            "0",
            "--token",
            "tok",
            "--movies",
            "12",
            "--shows",
            "1",
            "--seasons",
            "1",
            "--episodes",
            "2",
            "--other-videos",
            "1",
            "--seed",
            "9",
            "--latency-ms",
            "5",
            "--ready-file",
            str(ready),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while not ready.exists():
            assert proc.poll() is None, "fakeplex exited early"
            assert time.monotonic() < deadline, "fakeplex did not become ready"
            time.sleep(0.05)
        info = json.loads(ready.read_text())
        r = httpx.get(
            f"{info['url']}/library/sections/1/all?X-Plex-Container-Size=0",
            headers={"X-Plex-Token": "tok", "Accept": "application/json"},
        )
        assert r.json()["MediaContainer"]["totalSize"] == 12
        assert info["counts"]["episode"] == 2 and info["latency_ms"] == 5
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "fakeplex listening on http://127.0.0.1:" in out

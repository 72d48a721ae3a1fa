"""Put every source root of the monorepo on the venv's path (a .pth file), so `plexsync.<part>` imports work.

setuptools' editable install only maps folders that exist at install time; services land one at a time,
so the Makefile writes this file instead, listing every root whether or not it exists yet.
"""

from __future__ import annotations

import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE_ROOTS = [
    "libs/common",
    "services/auth",
    "services/catalog",
    "services/scanner",
    "services/scheduler",
    "tools/fakeplex",
    "tools/devstack",
    "cli",
    ".",
]


def main() -> None:
    site = Path(sysconfig.get_paths()["purelib"])
    pth = site / "plexsync-sources.pth"
    pth.write_text("".join(f"{ROOT / root}\n" for root in SOURCE_ROOTS))
    print(f"wrote {pth}")


if __name__ == "__main__":
    main()

"""fakeplex: a Plex Media Server + plex.tv emulator for tests, benchmarks and the demo.

In process::

    async with FakePlex(spec=LibrarySpec.from_sizes(movies=100)) as fp:
        fp.url, fp.token, fp.library.items()

As a process: ``python -m plexsync.fakeplex --port 32400 --ready-file /tmp/fp.json``.
"""

from plexsync.fakeplex.control import FakePlexControl, FakePlexControlError
from plexsync.fakeplex.faults import FaultRule
from plexsync.fakeplex.library import Event, Library, LibraryError, LibrarySpec, Node, Section, SectionSpec
from plexsync.fakeplex.server import DEFAULT_TOKEN, FakePlex

__all__ = [
    "DEFAULT_TOKEN",
    "Event",
    "FakePlex",
    "FakePlexControl",
    "FakePlexControlError",
    "FaultRule",
    "Library",
    "LibraryError",
    "LibrarySpec",
    "Node",
    "Section",
    "SectionSpec",
]

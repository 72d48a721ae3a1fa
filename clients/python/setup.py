"""Generates plexsync_client/v1 from the protos before the package is built (the code is not committed)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from setuptools import setup  # type: ignore[import-untyped]
from setuptools.command.build_py import build_py  # type: ignore[import-untyped]

# Loaded by path: importing the package would need its runtime dependencies inside the build environment.
_spec = importlib.util.spec_from_file_location(
    "_plexsync_generate", Path(__file__).resolve().parent / "src" / "plexsync_client" / "_generate.py"
)
assert _spec is not None and _spec.loader is not None
_generate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_generate)


class BuildPyWithProtos(build_py):
    def run(self) -> None:
        _generate.generate()
        super().run()


setup(cmdclass={"build_py": BuildPyWithProtos})

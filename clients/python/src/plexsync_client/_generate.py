"""Generate plexsync's protobuf and gRPC code into this package (`plexsync_client.v1`, not committed).

Run by the package build (setup.py) and by `make clients`; it needs grpcio-tools and mypy-protobuf. The protos are
taken from `PLEXSYNC_PROTOS` or the repository's `protos/` folder next to `clients/python`. Imports are rewritten
from `plexsync.v1` to `plexsync_client.v1`, so the client needs nothing of the services' code.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
OUT = PACKAGE_DIR / "v1"
_MODULE_REF = re.compile(r"\bplexsync\.v1\.(\w+_pb2(?:_grpc)?)\b")


def proto_root() -> Path:
    """Where plexsync/v1/*.proto are: $PLEXSYNC_PROTOS, else the repository's protos/ folder."""
    explicit = os.environ.get("PLEXSYNC_PROTOS")
    candidates = [Path(explicit)] if explicit else [PACKAGE_DIR.parents[3] / "protos", Path.cwd() / "../../protos"]
    for candidate in candidates:
        if (candidate / "plexsync" / "v1").is_dir():
            return candidate.resolve()
    raise SystemExit("plexsync protos not found: set PLEXSYNC_PROTOS to the folder holding plexsync/v1/*.proto")


def _rewrite(text: str, stub: bool) -> str:
    """Point imports at plexsync_client.v1 (in .py only imports and module names: its descriptors say plexsync.v1)."""
    text = re.sub(r"^from plexsync\.v1 import ", "from plexsync_client.v1 import ", text, flags=re.MULTILINE)
    if stub:
        return _MODULE_REF.sub(r"plexsync_client.v1.\1", text)
    return re.sub(r"'plexsync\.v1\.(\w+_pb2)'", r"'plexsync_client.v1.\1'", text)  # the classes' __module__


def generate(out: Path = OUT) -> int:
    """Write the generated modules into `out`; returns how many proto files were compiled."""
    import grpc_tools
    from grpc_tools import protoc

    root = proto_root()
    protos = sorted(str(p.relative_to(root)) for p in (root / "plexsync" / "v1").glob("*.proto"))
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    with tempfile.TemporaryDirectory() as tmp:
        args = ["grpc_tools.protoc", f"-I{root}", f"-I{well_known}"]
        args += [f"--python_out={tmp}", f"--grpc_python_out={tmp}", f"--mypy_out={tmp}", f"--mypy_grpc_out={tmp}"]
        if protoc.main([*args, *protos]) != 0:
            raise SystemExit("protoc failed on the plexsync protos")
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        for path in sorted((Path(tmp) / "plexsync" / "v1").iterdir()):
            if path.suffix in (".py", ".pyi"):
                (out / path.name).write_text(_rewrite(path.read_text(), path.suffix == ".pyi"))
    (out / "__init__.py").write_text('"""Generated from protos/plexsync/v1 (not in git)."""\n')
    return len(protos)


if __name__ == "__main__":
    print(f"generated {generate()} proto files into {OUT}")

"""Generate docs/api.md, the API reference, from the protos' comments (run by `make proto`).

The comments are the documentation: protoc's descriptor set with source info (`--include_source_info`) carries
each service, method, message, field, enum and value with its comment, so the reference cannot drift from the
contracts. `--check` fails when docs/api.md is stale; tests/unit/test_api_docs.py also fails when a message or
field has no comment.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc_tools
from google.protobuf import descriptor_pb2
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
OUT = ROOT / "docs" / "api.md"
# The messages and fields that had no comment when the reference was introduced; the list may only shrink (the
# unit test fails on any other undocumented one, and on a listed one that has a comment by now).
UNDOCUMENTED = ROOT / "tools" / "api_docs_undocumented.txt"
PACKAGE = "plexsync.v1"

# Field numbers of descriptor.proto, as SourceCodeInfo.Location.path uses them.
_FILE_MESSAGE, _FILE_ENUM, _FILE_SERVICE = 4, 5, 6
_MESSAGE_FIELD, _MESSAGE_NESTED, _MESSAGE_ENUM = 2, 3, 4
_ENUM_VALUE, _SERVICE_METHOD = 2, 2

_F = descriptor_pb2.FieldDescriptorProto
_SCALARS = {
    _F.TYPE_DOUBLE: "double", _F.TYPE_FLOAT: "float", _F.TYPE_INT64: "int64", _F.TYPE_UINT64: "uint64",
    _F.TYPE_INT32: "int32", _F.TYPE_FIXED64: "fixed64", _F.TYPE_FIXED32: "fixed32", _F.TYPE_BOOL: "bool",
    _F.TYPE_STRING: "string", _F.TYPE_BYTES: "bytes", _F.TYPE_UINT32: "uint32", _F.TYPE_SFIXED32: "sfixed32",
    _F.TYPE_SFIXED64: "sfixed64", _F.TYPE_SINT32: "sint32", _F.TYPE_SINT64: "sint64",
}  # fmt: skip


def descriptor_set(proto_root: Path = PROTO_ROOT) -> descriptor_pb2.FileDescriptorSet:
    """The plexsync protos compiled by protoc, with their comments (source info)."""
    protos = sorted(str(p.relative_to(proto_root)) for p in (proto_root / "plexsync" / "v1").glob("*.proto"))
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "api.binpb"
        args = ["grpc_tools.protoc", f"-I{proto_root}", f"-I{well_known}", "--include_source_info",
                f"--descriptor_set_out={out}", *protos]  # fmt: skip
        if protoc.main(args) != 0:
            raise RuntimeError("protoc failed on the protos (see above)")
        return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


def _comments(file: descriptor_pb2.FileDescriptorProto) -> dict[tuple[int, ...], str]:
    """Each element's comment (leading, else trailing) by its path in the file."""
    found: dict[tuple[int, ...], str] = {}
    for loc in file.source_code_info.location:
        text = loc.leading_comments.strip() or loc.trailing_comments.strip()
        if text:
            found[tuple(loc.path)] = " ".join(line.strip() for line in text.splitlines())
    return found


def _messages(
    messages: list[descriptor_pb2.DescriptorProto], path: tuple[int, ...], prefix: str
) -> Iterator[tuple[str, descriptor_pb2.DescriptorProto, tuple[int, ...]]]:
    """Every message (nested ones after their parent, maps' entries left out) with its full name and path."""
    for index, message in enumerate(messages):
        if message.options.map_entry:
            continue
        name, here = f"{prefix}.{message.name}", (*path, index)
        yield name, message, here
        yield from _messages(list(message.nested_type), (*here, _MESSAGE_NESTED), name)


def _enums(
    file: descriptor_pb2.FileDescriptorProto,
) -> Iterator[tuple[str, descriptor_pb2.EnumDescriptorProto, tuple[int, ...]]]:
    for index, enum in enumerate(file.enum_type):
        yield f"{file.package}.{enum.name}", enum, (_FILE_ENUM, index)
    for name, message, path in _messages(list(file.message_type), (_FILE_MESSAGE,), file.package):
        for index, enum in enumerate(message.enum_type):
            yield f"{name}.{enum.name}", enum, (*path, _MESSAGE_ENUM, index)


def _anchor(full_name: str) -> str:
    """The anchor GitHub makes of a heading ("plexsync/v1/auth.proto" -> "plexsyncv1authproto")."""
    return re.sub(r"[^a-z0-9_-]", "", full_name.lower())


def _link(type_name: str) -> str:
    """A message or enum type as a link when it is ours, as its name otherwise (google.protobuf.Timestamp)."""
    name = type_name.lstrip(".")
    if name.startswith(PACKAGE + "."):
        return f"[{name.removeprefix(PACKAGE + '.')}](#{_anchor(name)})"
    return f"`{name}`"


def _map_entries(file_set: descriptor_pb2.FileDescriptorSet) -> dict[str, descriptor_pb2.DescriptorProto]:
    entries: dict[str, descriptor_pb2.DescriptorProto] = {}
    for file in file_set.file:

        def walk(messages: list[descriptor_pb2.DescriptorProto], prefix: str) -> None:
            for message in messages:
                name = f"{prefix}.{message.name}"
                if message.options.map_entry:
                    entries[name] = message
                walk(list(message.nested_type), name)

        walk(list(file.message_type), f".{file.package}")
    return entries


def _field_type(field: descriptor_pb2.FieldDescriptorProto, entries: dict[str, descriptor_pb2.DescriptorProto]) -> str:
    if field.type_name in entries:
        key, value = entries[field.type_name].field
        return f"map<{_field_type(key, entries)}, {_field_type(value, entries)}>"
    base = _SCALARS.get(field.type) or _link(field.type_name)
    if field.label == _F.LABEL_REPEATED:
        return f"repeated {base}"
    if field.proto3_optional:
        return f"optional {base}"
    return base


def _cell(text: str) -> str:
    return text.replace("|", "\\|") or " "


def undocumented(file_set: descriptor_pb2.FileDescriptorSet) -> list[str]:
    """Every message and field without a comment, by full name (what the unit test says must be empty)."""
    missing: list[str] = []
    for file in file_set.file:
        comments = _comments(file)
        for name, message, path in _messages(list(file.message_type), (_FILE_MESSAGE,), file.package):
            if path not in comments:
                missing.append(f"{file.name}: message {name}")
            for index, field in enumerate(message.field):
                if (*path, _MESSAGE_FIELD, index) not in comments:
                    missing.append(f"{file.name}: field {name}.{field.name}")
    return missing


def render(file_set: descriptor_pb2.FileDescriptorSet) -> str:
    """docs/api.md for `file_set`: per file its services (methods), messages (fields) and enums (values)."""
    entries = _map_entries(file_set)
    files = sorted((f for f in file_set.file if f.package == PACKAGE), key=lambda f: f.name)
    out = [
        "# plexsync API reference",
        "",
        "<!-- Generated by tools/gen_api_docs.py from the comments in protos/ (`make proto`); do not edit. -->",
        "",
        f"gRPC package `{PACKAGE}`. Conventions (paging, errors, authentication, roles) are in docs/ARCHITECTURE.md",
        "under *Contracts and errors*; which role may call which method is `METHOD_POLICY` in",
        "libs/common/plexsync/common/access.py.",
        "",
    ]
    out += [f"- [{f.name}](#{_anchor(f.name)})" for f in files] + [""]
    for file in files:
        comments = _comments(file)
        out += [f"## {file.name}", ""]
        for s_index, service in enumerate(file.service):
            full = f"{file.package}.{service.name}"
            out += [f"### {service.name}", "", f'<a id="{_anchor(full)}"></a>', ""]
            if text := comments.get((_FILE_SERVICE, s_index)):
                out += [text, ""]
            out += ["| method | request | response | description |", "|---|---|---|---|"]
            for m_index, method in enumerate(service.method):
                request = ("stream " if method.client_streaming else "") + _link(method.input_type)
                response = ("stream " if method.server_streaming else "") + _link(method.output_type)
                text = comments.get((_FILE_SERVICE, s_index, _SERVICE_METHOD, m_index), "")
                out.append(f"| `{method.name}` | {request} | {response} | {_cell(text)} |")
            out.append("")
        for name, message, path in _messages(list(file.message_type), (_FILE_MESSAGE,), file.package):
            out += [f"### {name.removeprefix(PACKAGE + '.')}", "", f'<a id="{_anchor(name)}"></a>', ""]
            if text := comments.get(path):
                out += [text, ""]
            if message.field:
                out += ["| field | type | # | description |", "|---|---|---|---|"]
                for f_index, field in enumerate(message.field):
                    text = comments.get((*path, _MESSAGE_FIELD, f_index), "")
                    if field.HasField("oneof_index") and not field.proto3_optional:
                        text = f"(one of `{message.oneof_decl[field.oneof_index].name}`) {text}".strip()
                    out.append(f"| `{field.name}` | {_field_type(field, entries)} | {field.number} | {_cell(text)} |")
                out.append("")
        for name, enum, path in _enums(file):
            out += [f"### {name.removeprefix(PACKAGE + '.')}", "", f'<a id="{_anchor(name)}"></a>', ""]
            if text := comments.get(path):
                out += [text, ""]
            out += ["| value | # | description |", "|---|---|---|"]
            for v_index, value in enumerate(enum.value):
                text = comments.get((*path, _ENUM_VALUE, v_index), "")
                out.append(f"| `{value.name}` | {value.number} | {_cell(text)} |")
            out.append("")
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if docs/api.md is not what the protos say")
    args = parser.parse_args(argv)
    file_set = descriptor_set()
    text = render(file_set)
    missing = undocumented(file_set)
    if missing:
        print(f"{len(missing)} messages/fields have no comment, e.g. {missing[0]}", file=sys.stderr)
    if args.check:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT.relative_to(ROOT)} is stale: run `make proto`", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT.relative_to(ROOT)} ({len(text.splitlines())} lines)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python3
"""Regenerate every ``src/kuasar/proto/*.proto`` into checked-in ``*_pb2.py`` and ``*_pb2.pyi``.

Runs grpcio-tools' bundled protoc (``python -m grpc_tools.protoc --python_out --pyi_out``) with
``src/kuasar/proto`` as the include root, then rewrites protoc's bare ``import X_pb2`` lines (for
one of our protos importing another) to ``from kuasar.proto import X_pb2`` so the stubs import as
``kuasar.proto.X_pb2``. ``tests/unit/test_proto_fresh.py`` calls :func:`generate` into a temporary
directory and compares, so stale stubs fail the tests.

Kata's files (``kata_*.proto``) go to a private descriptor pool, ``kuasar.proto.kata_pool.POOL``:
Kata and Kuasar disagree on a message both declare in package ``grpc``, and one pool holds one
definition per full name. Their stubs are rewritten to add their file there instead of to the
default pool.

Usage: ``python scripts/gen_proto.py [--out DIR]`` (default: write beside the .proto files).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parent.parent / "src" / "kuasar" / "proto"

_BARE_IMPORT = re.compile(r"^import (\w+_pb2)( as \w+)?$", re.MULTILINE)
_PYI_BARE_IMPORT = re.compile(r"^import (\w+_pb2) as (\w+)$", re.MULTILINE)
_DEFAULT_POOL = "DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile("
#: Stubs of these files add themselves to ``kuasar.proto.kata_pool.POOL``.
PRIVATE_POOL_PREFIX = "kata_"
_PRIVATE_POOL = (
    "from kuasar.proto import kata_pool as _kata_pool\nDESCRIPTOR = _kata_pool.POOL.AddSerializedFile("
)


def _well_known_include() -> Path:
    import grpc_tools

    return Path(grpc_tools.__file__).resolve().parent / "_proto"


def _fix_imports(text: str, ours: set[str]) -> str:
    def repl(match: re.Match[str]) -> str:
        module = match.group(1)
        if module not in ours:
            return match.group(0)
        return f"from kuasar.proto import {module}{match.group(2) or ''}"

    return _BARE_IMPORT.sub(repl, text)


def generate(out_dir: Path, proto_dir: Path = PROTO_DIR) -> list[Path]:
    """Generate stubs for every .proto in ``proto_dir`` into ``out_dir``; return the files written."""
    protos = sorted(p.name for p in proto_dir.glob("*.proto"))
    if not protos:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    # One protoc run per pool: protoc, like a pool, refuses two definitions of one full name.
    private = [name for name in protos if name.startswith(PRIVATE_POOL_PREFIX)]
    default = [name for name in protos if not name.startswith(PRIVATE_POOL_PREFIX)]
    for group in (default, private):
        if not group:
            continue
        cmd = [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{proto_dir}",
            f"-I{_well_known_include()}",
            f"--python_out={out_dir}",
            f"--pyi_out={out_dir}",
            *group,
        ]
        subprocess.run(cmd, check=True, cwd=proto_dir)
    ours = {name.removesuffix(".proto") + "_pb2" for name in protos}
    written: list[Path] = []
    for name in protos:
        stem = name.removesuffix(".proto")
        for suffix in ("_pb2.py", "_pb2.pyi"):
            path = out_dir / f"{stem}{suffix}"
            text = _fix_imports(path.read_text(), ours)
            if suffix == "_pb2.py" and stem.startswith(PRIVATE_POOL_PREFIX):
                if text.count(_DEFAULT_POOL) != 1:
                    raise RuntimeError(f"{path.name}: protoc's pool line changed; update gen_proto.py")
                text = text.replace(_DEFAULT_POOL, _PRIVATE_POOL)
            path.write_text(text)
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=PROTO_DIR, help="output directory")
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

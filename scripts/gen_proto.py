#!/usr/bin/env python3
"""Regenerate every ``src/kuasar/proto/*.proto`` into checked-in ``*_pb2.py`` and ``*_pb2.pyi``.

Runs grpcio-tools' bundled protoc (``python -m grpc_tools.protoc --python_out --pyi_out``) with
``src/kuasar/proto`` as the include root, then rewrites protoc's bare ``import X_pb2`` lines (for
one of our protos importing another) to ``from kuasar.proto import X_pb2`` so the stubs import as
``kuasar.proto.X_pb2``. ``tests/unit/test_proto_fresh.py`` calls :func:`generate` into a temporary
directory and compares, so stale stubs fail the tests.

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
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{proto_dir}",
        f"-I{_well_known_include()}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        *protos,
    ]
    subprocess.run(cmd, check=True, cwd=proto_dir)
    ours = {name.removesuffix(".proto") + "_pb2" for name in protos}
    written: list[Path] = []
    for name in protos:
        stem = name.removesuffix(".proto")
        for suffix in ("_pb2.py", "_pb2.pyi"):
            path = out_dir / f"{stem}{suffix}"
            path.write_text(_fix_imports(path.read_text(), ours))
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

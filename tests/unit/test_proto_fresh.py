"""The checked-in protobuf stubs match a fresh generation (run `make proto` when this fails)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = ROOT / "src" / "kuasar" / "proto"


def _load_gen_proto():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("gen_proto", ROOT / "scripts" / "gen_proto.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_proto_has_fresh_stubs(tmp_path: Path) -> None:
    written = _load_gen_proto().generate(tmp_path)
    protos = sorted(PROTO_DIR.glob("*.proto"))
    assert {p.name for p in written} == {
        f"{p.stem}{suffix}" for p in protos for suffix in ("_pb2.py", "_pb2.pyi")
    }
    stale = [p.name for p in written if (PROTO_DIR / p.name).read_bytes() != p.read_bytes()]
    assert not stale, f"stale generated stubs (run `make proto`): {stale}"


def test_no_bare_imports_of_our_stubs() -> None:
    ours = {p.stem + "_pb2" for p in PROTO_DIR.glob("*.proto")}
    for stub in PROTO_DIR.glob("*_pb2.py*"):
        for line in stub.read_text().splitlines():
            for module in ours:
                assert not line.startswith(f"import {module}"), (stub.name, line)


def test_envelope_imports_as_package_module() -> None:
    from kuasar.proto import health_pb2, ttrpc_pb2

    assert ttrpc_pb2.Request.DESCRIPTOR.full_name == "ttrpc.Request"
    assert health_pb2.DESCRIPTOR.services_by_name["Health"].full_name == "grpc.Health"

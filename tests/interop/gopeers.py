"""Build and run the Go ttrpc peers (``go/src/kuasarpeer``) for the interop tests and the bench.

Layer contract: test/bench support only; stdlib plus ``asyncio``. Builds offline from Debian's
``golang-go`` and ``golang-github-containerd-ttrpc-dev`` (ttrpc 1.1.1) with ``GO111MODULE=off``
into ``tests/interop/.build/<hash>/`` (git-ignored), keyed by the Go sources and the Go version,
so a second run costs nothing. Never touches the network (``GOPROXY=off``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
GO_ROOT = HERE / "go"
PEER_PACKAGE = GO_ROOT / "src" / "kuasarpeer"
BUILD_ROOT = HERE / ".build"
DEBIAN_GOCODE = Path("/usr/share/gocode")
DEBIAN_TTRPC = DEBIAN_GOCODE / "src" / "github.com" / "containerd" / "ttrpc"

#: The service both peers (Go and :mod:`tests.interop.peer`) serve.
PEER_SERVICE = "kuasar.interop.v1.Peer"

BUILD_TIMEOUT = 300.0
START_TIMEOUT = 10.0
CLIENT_TIMEOUT = 60.0


class GoUnavailable(Exception):
    """Go or Debian's Go ttrpc is missing: the reason to skip with."""


@dataclass(frozen=True)
class GoPeers:
    """Paths of the built Go programs."""

    server: Path
    client: Path


def missing_reason() -> str | None:
    """Why the Go peers cannot be built here, or ``None`` when they can."""
    if shutil.which("go") is None:
        return "`go` not found (apt-get install golang-go golang-github-containerd-ttrpc-dev)"
    if not DEBIAN_TTRPC.is_dir():
        return f"{DEBIAN_TTRPC} absent (apt-get install golang-github-containerd-ttrpc-dev)"
    return None


def _go_env(gocache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        GO111MODULE="off",
        GOPROXY="off",
        GOFLAGS="",
        GOPATH=f"{GO_ROOT}:{DEBIAN_GOCODE}",
        GOCACHE=str(gocache),
        CGO_ENABLED="0",
    )
    return env


def _source_key() -> str:
    digest = hashlib.sha256()
    version = subprocess.run(["go", "version"], capture_output=True, text=True, timeout=30, check=True)
    digest.update(version.stdout.encode())
    for path in sorted(PEER_PACKAGE.rglob("*.go")):
        digest.update(str(path.relative_to(PEER_PACKAGE)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def build_go_peers(build_root: Path = BUILD_ROOT) -> GoPeers:
    """Build (or reuse) the Go server and client.

    Raises:
        GoUnavailable: Go or the Debian ttrpc sources are absent.
        RuntimeError: ``go build`` failed (its output is in the message).
    """
    reason = missing_reason()
    if reason is not None:
        raise GoUnavailable(reason)
    out = build_root / _source_key()
    peers = GoPeers(server=out / "kuasarpeer-server", client=out / "kuasarpeer-client")
    if peers.server.is_file() and peers.client.is_file():
        return peers
    build_root.mkdir(parents=True, exist_ok=True)
    env = _go_env(build_root / "gocache")
    staging = Path(tempfile.mkdtemp(prefix="build-", dir=build_root))
    try:
        for name, target in (("server", peers.server), ("client", peers.client)):
            result = subprocess.run(
                ["go", "build", "-o", str(staging / target.name), f"./{name}"],
                cwd=PEER_PACKAGE,
                env=env,
                capture_output=True,
                text=True,
                timeout=BUILD_TIMEOUT,
                check=False,
            )
            if result.returncode != 0:
                raise RuntimeError(f"go build ./{name} failed:\n{result.stdout}{result.stderr}")
        with contextlib.suppress(OSError):
            staging.rename(out)  # atomic; a concurrent builder may have won, which is fine
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return peers


@contextlib.contextmanager
def go_server(binary: Path, socket_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run the Go server on ``socket_path`` until the block ends (stdin EOF, then SIGTERM/SIGKILL)."""
    proc = subprocess.Popen(
        [str(binary), "-socket", str(socket_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        line = _readline_with_timeout(proc, START_TIMEOUT)
        if not line.startswith(b"LISTENING "):
            raise RuntimeError(f"Go server did not start: {line!r}")
        yield proc
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()
        with contextlib.suppress(FileNotFoundError):
            socket_path.unlink()


def _readline_with_timeout(proc: subprocess.Popen[bytes], timeout: float) -> bytes:
    import selectors

    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            raise RuntimeError(f"Go server printed nothing within {timeout}s")
    return proc.stdout.readline()


async def run_go_client(
    binary: Path, socket_path: Path | str, calls: Sequence[dict[str, Any]], *, timeout: float = CLIENT_TIMEOUT
) -> list[dict[str, Any]]:
    """Make ``calls`` (script-mode JSON specs) with the Go client on one connection; return its results."""
    script = "".join(json.dumps(call) + "\n" for call in calls).encode()
    proc = await asyncio.create_subprocess_exec(
        str(binary),
        "-socket",
        str(socket_path),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate(script)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"Go client exited {proc.returncode}: {err.decode(errors='replace')}")
    results = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
    if len(results) != len(calls):
        raise RuntimeError(f"Go client answered {len(results)} of {len(calls)} calls: {err.decode()}")
    return results


async def run_go_bench(
    binary: Path,
    socket_path: Path | str,
    calls: int,
    concurrency: int,
    *,
    timeout: float = CLIENT_TIMEOUT,
    service: str = PEER_SERVICE,
    method: str = "Echo",
) -> float:
    """Run the Go client's bench mode (``service``/``method``: the peer's Echo, or
    ``grpc.Health``/``Check`` of a real agent); return its calls per second."""
    proc = await asyncio.create_subprocess_exec(
        str(binary),
        "-socket",
        str(socket_path),
        "-bench",
        str(calls),
        "-concurrency",
        str(concurrency),
        "-service",
        service,
        "-method",
        method,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    fields = dict(part.split("=", 1) for part in out.decode().split() if "=" in part)
    if proc.returncode != 0 or "calls_per_s" not in fields:
        raise RuntimeError(f"Go bench failed ({proc.returncode}): {out.decode()} {err.decode()}")
    return float(fields["calls_per_s"])

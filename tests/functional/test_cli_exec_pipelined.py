"""``kuasarctl exec`` over the agent API sends its Exec with the probe's first calls (one round
trip fewer), and a guest that is not ours gets that Exec as one unknown call and nothing else.

Proof on the wire: a relay between kuasarctl and a real local sandbox's ``task.socket`` records
which way each chunk went, in order; the guest stand-ins journal every request they receive.
"""

from __future__ import annotations

import os
import select
import shutil
import socket
import threading
from collections.abc import Iterator

import pytest

from tests.functional.cli_helpers import LocalSandbox, kuasarctl, local_sandbox, short_tmpdir
from tests.functional.guests import Guest

#: The Exec request's service and method, as its ttrpc Request frame carries them.
EXEC_REQUEST = b"\n\x15kuasar.agent.v1.Agent\x12\x04Exec"


class Relay:
    """A VMM socket in front of ``target``: every chunk forwarded, recorded as ``(way, bytes)``
    with ``way`` ``"out"`` (kuasarctl to the guest) or ``"in"``."""

    def __init__(self, path: str, target: str) -> None:
        self.target = target
        self.chunks: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(path)
        self._listener.listen(8)
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        client, _ = self._listener.accept()
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        upstream.connect(self.target)
        ways = {client: ("out", upstream), upstream: ("in", client)}
        with client, upstream:
            while True:
                ready, _, _ = select.select([client, upstream, self._stop_r], [], [], 30)
                if self._stop_r in ready or not ready:
                    return
                for sock in ready:
                    way, peer = ways[sock]  # type: ignore[index]
                    data = sock.recv(65536)
                    if not data:
                        return
                    with self._lock:
                        self.chunks.append((way, data))
                    peer.sendall(data)

    def close(self) -> None:
        os.write(self._stop_w, b"x")
        self._thread.join(10)
        self._listener.close()
        os.close(self._stop_r)
        os.close(self._stop_w)


@pytest.fixture(scope="module")
def sandbox() -> Iterator[LocalSandbox]:
    with local_sandbox("pipelined") as started:
        yield started


def test_exec_leaves_with_the_probe(sandbox: LocalSandbox) -> None:
    root = short_tmpdir()  # a VMM's root: ID/task.socket, the relay's
    os.mkdir(os.path.join(root, sandbox.id))
    relay = Relay(
        os.path.join(root, sandbox.id, "task.socket"), os.path.join(sandbox.root, sandbox.id, "task.socket")
    )
    try:
        result = kuasarctl("exec", "-t", "-d", root, sandbox.id, "echo", "hi", timeout=60)
    finally:
        relay.close()
        shutil.rmtree(root)
    assert (result.returncode, result.stdout) == (0, b"hi\n"), result.stderr
    ways = [way for way, _ in relay.chunks]
    sent_exec = next(i for i, (way, data) in enumerate(relay.chunks) if way == "out" and EXEC_REQUEST in data)
    # before the Exec went out, the guest had said only the handshake's "OK <port>" line
    answers_before = [data for way, data in relay.chunks[:sent_exec] if way == "in"]
    assert len(answers_before) == 1 and answers_before[0].startswith(b"OK "), relay.chunks
    assert ways.count("out") == 2, relay.chunks  # CONNECT, then the probe and the Exec together


def test_a_guest_that_is_not_ours_gets_one_unknown_call(vmm_task_guest: Guest) -> None:
    since = vmm_task_guest.mark()
    result = kuasarctl("exec", "-t", "-d", vmm_task_guest.root, vmm_task_guest.id, "echo", "hi", timeout=60)
    assert (result.returncode, result.stdout) == (0, b"hi\n"), result.stderr
    paths = [call.path for call in vmm_task_guest.calls(since)]
    assert paths.count("/kuasar.agent.v1.Agent/Exec") == 1, paths
    assert paths[-1] == "/grpc.SandboxService/ExecVMProcess" and len(vmm_task_guest.exec_calls(since)) == 1

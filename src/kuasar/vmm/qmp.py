"""A minimal QMP (QEMU Machine Protocol) client: connect, negotiate, run one command at a time.

Layer contract: vmm layer, asyncio, host side; used by :mod:`kuasar.vmm.qemu_guest` to power the
guest off and to quit QEMU. Every wait is bounded by the caller's ``asyncio.timeout``; a line is at
most :data:`MAX_LINE` bytes. Wire: QEMU greets with ``{"QMP": ...}``; the client sends
``{"execute": "qmp_capabilities"}``; then each ``{"execute": NAME, "arguments": {...}}`` gets one
``{"return": ...}`` or ``{"error": {"class": ..., "desc": ...}}``, with ``{"event": ...}`` lines
interleaved (skipped here).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from kuasar.errors import KuasarError

__all__ = ["MAX_LINE", "Qmp", "QmpError", "ctrl_alt_delete"]

MAX_LINE = 1 << 20


class QmpError(KuasarError):
    """QMP failed: no monitor, a garbled reply, or QEMU answered with an error."""


class Qmp:
    """One QMP connection (``async with await Qmp.connect(path)``)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def connect(cls, path: str) -> Qmp:
        """Connect to QEMU's ``-qmp unix:PATH`` socket and leave capabilities negotiation.

        Raises:
            QmpError: no monitor at ``path``, or it does not speak QMP.
        """
        try:
            reader, writer = await asyncio.open_unix_connection(path, limit=MAX_LINE)
        except OSError as exc:
            raise QmpError(f"cannot connect to QEMU's monitor {path}: {exc.strerror or exc}") from None
        qmp = cls(reader, writer)
        try:
            await qmp._negotiate(path)
        except BaseException:
            await qmp.close()
            raise
        return qmp

    async def _negotiate(self, path: str) -> None:
        greeting = await self._read()
        if "QMP" not in greeting:
            raise QmpError(f"{path} is not a QMP monitor (it said {str(greeting)[:80]})")
        await self.execute("qmp_capabilities")

    async def _read(self) -> dict[str, Any]:
        try:
            line = await self._reader.readline()
        except (ValueError, OSError) as exc:
            raise QmpError(f"QEMU's monitor failed: {exc}") from None
        if not line:
            raise QmpError("QEMU's monitor closed the connection")
        try:
            message = json.loads(line)
        except ValueError:
            raise QmpError(f"QEMU's monitor sent a line that is not JSON: {line[:80]!r}") from None
        if not isinstance(message, dict):
            raise QmpError(f"QEMU's monitor sent {line[:80]!r}")
        return message

    async def execute(self, name: str, arguments: dict[str, Any] | None = None) -> Any:
        """Run ``name`` and return its ``return`` value.

        Raises:
            QmpError: QEMU answered with an error, or the connection failed.
        """
        request: dict[str, Any] = {"execute": name}
        if arguments:
            request["arguments"] = arguments
        try:
            self._writer.write(json.dumps(request).encode() + b"\n")
            await self._writer.drain()
        except OSError as exc:
            raise QmpError(f"QEMU's monitor failed: {exc}") from None
        while True:
            message = await self._read()
            if "return" in message:
                return message["return"]
            if "error" in message:
                error = message["error"]
                desc = error.get("desc", error) if isinstance(error, dict) else error
                raise QmpError(f"QEMU refused {name}: {desc}")

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()

    async def __aenter__(self) -> Qmp:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


#: ``send-key`` arguments for ctrl-alt-delete: Linux turns it into SIGINT for PID 1 once PID 1 has
#: disabled the kernel's own ctrl-alt-delete reboot (kuasar-agent does; so does systemd).
ctrl_alt_delete: dict[str, Any] = {
    "keys": [{"type": "qcode", "data": key} for key in ("ctrl", "alt", "delete")]
}

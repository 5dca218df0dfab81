"""The vhost-user backend's request handling: features, memory table, vring set-up, config space.

Layer contract: sans-IO apart from ``os.close`` of the descriptors it owns; imports
``kuasar.errors`` and the package's own :mod:`.vhost_user` and :mod:`.virtqueue`. Mapping memory
is the driver's (a :class:`Hooks` method): the backend is handed the resulting
:class:`~kuasar.vmm.virtqueue.GuestMemory` and builds each :class:`~kuasar.vmm.virtqueue.Virtqueue`
over it once the ring is set up, started (SET_VRING_KICK) and enabled.

What QEMU 7.2's vhost-user-vsock-pci sends, in order (facts file): GET_FEATURES,
GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES (REPLY_ACK | CONFIG), SET_OWNER, GET_FEATURES,
SET_VRING_CALL/ERR for queues 0 and 1, GET_CONFIG; at DRIVER_OK SET_FEATURES, SET_MEM_TABLE (need
reply), per queue SET_VRING_NUM/BASE/ADDR/KICK, then SET_VRING_ENABLE and SET_VRING_CALL again.
No inflight descriptors (GET/SET_INFLIGHT_FD) are asked for, so INFLIGHT_SHMFD is not offered.

Every request is answered: its reply (GET_*), or the REPLY_ACK the front-end asked for; a request
that fails (an unmappable table, a ring outside guest memory, an unknown request) answers failure
when an ack is owed and is logged, and the connection carries on. A message the protocol forbids
raises :class:`~kuasar.vmm.vhost_user.VhostUserError`: the driver closes the connection.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from kuasar import _log
from kuasar.errors import KuasarError
from kuasar.vmm.vhost_user import (
    ConfigSpace,
    Connection,
    MemoryRegion,
    Message,
    ProtocolFeature,
    Request,
    VhostUserError,
    VringAddr,
    VringFile,
    VringState,
    decode_memory_table,
    decode_u64,
    encode_u64,
)
from kuasar.vmm.virtqueue import GuestMemory, RingError, Virtqueue

__all__ = [
    "F_EVENT_IDX",
    "F_INDIRECT_DESC",
    "F_PROTOCOL_FEATURES",
    "F_VERSION_1",
    "Backend",
    "Hooks",
    "Vring",
]

F_INDIRECT_DESC = 1 << 28
F_EVENT_IDX = 1 << 29
#: ``VHOST_USER_F_PROTOCOL_FEATURES``: offered by every backend that speaks protocol features.
F_PROTOCOL_FEATURES = 1 << 30
F_VERSION_1 = 1 << 32

log = _log.get_logger("kuasar.vmm.backend")


class Hooks(Protocol):
    """What the backend needs from its driver and device."""

    def map_memory(self, regions: Sequence[MemoryRegion], fds: Sequence[int]) -> GuestMemory:
        """Map the regions (one descriptor each; the driver owns ``fds`` from now on).

        Raises:
            KuasarError or OSError: the table cannot be mapped.
        """
        ...

    def unmap_memory(self, memory: GuestMemory) -> None:
        """The table was replaced or the connection ended: unmap it."""
        ...

    def queues_changed(self) -> None:
        """Some vring started, stopped or changed descriptors: look at ``Backend.vrings`` again."""
        ...


@dataclass(slots=True)
class Vring:
    """One vring as the front-end set it up, and its running queue (``None`` while stopped)."""

    index: int
    num: int = 0
    base: int = 0
    addr: VringAddr | None = None
    kick: int | None = None
    call: int | None = None
    err: int | None = None
    enabled: bool = False
    started: bool = False
    queue: Virtqueue | None = None

    def close_fds(self) -> None:
        for fd in (self.kick, self.call, self.err):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.kick = self.call = self.err = None


class Backend:
    """Handles one front-end's requests for a device with ``queues`` vrings.

    Args:
        hooks: the driver's memory mapping and change notification.
        features: virtio feature bits the device offers (PROTOCOL_FEATURES is added).
        config: the device's config space (for vsock: the guest CID as le64).
        queues: how many vrings the front-end gives the backend.
        protocol_features: offered protocol features (REPLY_ACK and CONFIG by default).
    """

    def __init__(
        self,
        hooks: Hooks,
        *,
        features: int,
        config: bytes,
        queues: int,
        protocol_features: int = ProtocolFeature.REPLY_ACK | ProtocolFeature.CONFIG,
    ) -> None:
        self.hooks = hooks
        self.offered_features = features | F_PROTOCOL_FEATURES
        self.features = 0
        self.config = config
        self.connection = Connection(protocol_features)
        self.vrings = [Vring(i) for i in range(queues)]
        self.memory: GuestMemory | None = None

    def handle(self, message: Message) -> bytes:
        """Apply one request; returns the bytes to send back (possibly none).

        Raises:
            VhostUserError: the request breaks the protocol (close the connection).
        """
        log.debug(
            "<- %s flags %#x payload %s fds %s",
            message.name,
            message.flags,
            message.payload.hex(),
            message.fds,
        )
        handler = _HANDLERS.get(message.request)
        if handler is None:
            self._close_fds(message.fds)
            log.warning("unsupported vhost-user %s", message.name)
            return self.connection.ack(message, ok=False)
        try:
            result = handler(self, message)
        except VhostUserError:
            raise
        except (KuasarError, OSError) as exc:
            log.warning("vhost-user %s failed: %s", message.name, exc)
            return self.connection.ack(message, ok=False)
        if isinstance(result, bytes):
            return self.connection.reply(message, result)
        return self.connection.ack(message, ok=True)

    def close(self) -> None:
        """The front-end went away: stop every queue, close every descriptor, unmap memory."""
        for vring in self.vrings:
            self._stop(vring)
            vring.close_fds()
        self._close_fds(self.connection.close())
        self._set_memory(None)
        self.hooks.queues_changed()

    # ------------------------------------------------------------ handlers

    def _get_features(self, message: Message) -> bytes:
        return encode_u64(self.offered_features)

    def _set_features(self, message: Message) -> None:
        value = decode_u64(message.payload)
        if value & ~self.offered_features:
            raise VhostUserError(f"SET_FEATURES acks unoffered bits {value & ~self.offered_features:#x}")
        self.features = value
        if not value & F_PROTOCOL_FEATURES:  # rings start enabled (vhost-user.rst, "Ring states")
            for vring in self.vrings:
                vring.enabled = True

    def _get_protocol_features(self, message: Message) -> bytes:
        return encode_u64(self.connection.offered_protocol_features)

    def _nothing(self, message: Message) -> None:
        return None

    def _reset(self, message: Message) -> None:
        for vring in self.vrings:
            self._stop(vring)
            vring.close_fds()
            vring.enabled = vring.started = False
        self.features = 0
        self.hooks.queues_changed()

    def _set_mem_table(self, message: Message) -> None:
        try:
            regions = decode_memory_table(message.payload)
        except VhostUserError:
            self._close_fds(message.fds)
            raise
        if len(message.fds) != len(regions):
            self._close_fds(message.fds)
            raise VhostUserError(f"{len(regions)} memory regions came with {len(message.fds)} fds")
        memory = self.hooks.map_memory(regions, message.fds)
        for vring in self.vrings:  # running queues move to the new table at the same indices
            self._stop(vring)
        self._set_memory(memory)
        self._update_queues()

    def _set_memory(self, memory: GuestMemory | None) -> None:
        old, self.memory = self.memory, memory
        if old is not None:
            self.hooks.unmap_memory(old)

    def _vring(self, index: int) -> Vring:
        if not 0 <= index < len(self.vrings):
            raise VhostUserError(f"vring {index} does not exist (the device has {len(self.vrings)})")
        return self.vrings[index]

    def _set_vring_num(self, message: Message) -> None:
        state = VringState.decode(message.payload)
        self._vring(state.index).num = state.num

    def _set_vring_base(self, message: Message) -> None:
        state = VringState.decode(message.payload)
        self._vring(state.index).base = state.num

    def _set_vring_addr(self, message: Message) -> None:
        addr = VringAddr.decode(message.payload)
        self._vring(addr.index).addr = addr

    def _get_vring_base(self, message: Message) -> bytes:
        vring = self._vring(VringState.decode(message.payload).index)
        self._stop(vring)
        vring.started = False
        self.hooks.queues_changed()
        return VringState(vring.index, vring.base).encode()

    def _set_vring_fd(self, message: Message) -> None:
        file = VringFile.decode(message.payload)
        fd = message.fds[0] if message.fds else None
        if file.has_fd != (fd is not None):
            self._close_fds(message.fds)
            raise VhostUserError(f"{message.name}: descriptor flag and descriptors disagree")
        try:
            vring = self._vring(file.index)
        except VhostUserError:
            self._close_fds(message.fds)
            raise
        attr = _FD_ATTRS[message.request]
        old = getattr(vring, attr)
        setattr(vring, attr, fd)
        if old is not None and old != fd:
            self._close_fds((old,))
        if attr == "kick":
            if fd is None:
                raise KuasarError(f"vring {file.index}: polling mode (no kick descriptor) is not supported")
            vring.started = True
        self._update_queues()

    def _set_vring_enable(self, message: Message) -> None:
        state = VringState.decode(message.payload)
        vring = self._vring(state.index)
        if state.num not in (0, 1):
            raise VhostUserError(f"SET_VRING_ENABLE with {state.num}")
        vring.enabled = bool(state.num)
        if not vring.enabled:
            self._stop(vring)
        self._update_queues()

    def _get_config(self, message: Message) -> bytes:
        asked = ConfigSpace.decode(message.payload)
        end = asked.offset + len(asked.data)
        if end > len(self.config):
            raise VhostUserError(
                f"GET_CONFIG of bytes {asked.offset}..{end}, the config has {len(self.config)}"
            )
        return ConfigSpace(asked.offset, asked.flags, self.config[asked.offset : end]).encode()

    def _set_config(self, message: Message) -> None:
        ConfigSpace.decode(message.payload)
        raise KuasarError("the device's config space is read-only")

    # ------------------------------------------------------------ queues

    def _update_queues(self) -> None:
        """Build the queue of every vring that became runnable; a ring outside guest memory stays
        stopped and fails the request (after the others were built)."""
        failed: RingError | None = None
        for vring in self.vrings:
            if vring.queue is None and self._runnable(vring):
                try:
                    vring.queue = self._build(vring)
                except RingError as exc:
                    failed = failed or exc
        self.hooks.queues_changed()
        if failed is not None:
            raise failed

    def _runnable(self, vring: Vring) -> bool:
        return bool(
            vring.started and vring.enabled and vring.addr and vring.num and vring.kick is not None
        ) and (self.memory is not None)

    def _build(self, vring: Vring) -> Virtqueue:
        assert vring.addr is not None and self.memory is not None
        return Virtqueue(
            self.memory,
            vring.num,
            vring.addr.desc,
            vring.addr.avail,
            vring.addr.used,
            next_avail=vring.base,
            event_idx=bool(self.features & F_EVENT_IDX),
            indirect=bool(self.features & F_INDIRECT_DESC),
        )

    def _stop(self, vring: Vring) -> None:
        if vring.queue is not None:
            vring.base = vring.queue.next_avail
            vring.queue.release()
            vring.queue = None

    @staticmethod
    def _close_fds(fds: Sequence[int]) -> None:
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)


_FD_ATTRS: dict[int, str] = {
    Request.SET_VRING_KICK: "kick",
    Request.SET_VRING_CALL: "call",
    Request.SET_VRING_ERR: "err",
}
_HANDLERS: dict[int, Callable[[Backend, Message], bytes | None]] = {
    Request.GET_FEATURES: Backend._get_features,
    Request.SET_FEATURES: Backend._set_features,
    Request.SET_OWNER: Backend._nothing,
    Request.RESET_OWNER: Backend._reset,
    Request.RESET_DEVICE: Backend._reset,
    Request.GET_PROTOCOL_FEATURES: Backend._get_protocol_features,
    Request.SET_PROTOCOL_FEATURES: Backend._nothing,  # the Connection records it
    Request.SET_MEM_TABLE: Backend._set_mem_table,
    Request.SET_VRING_NUM: Backend._set_vring_num,
    Request.SET_VRING_BASE: Backend._set_vring_base,
    Request.SET_VRING_ADDR: Backend._set_vring_addr,
    Request.GET_VRING_BASE: Backend._get_vring_base,
    Request.SET_VRING_KICK: Backend._set_vring_fd,
    Request.SET_VRING_CALL: Backend._set_vring_fd,
    Request.SET_VRING_ERR: Backend._set_vring_fd,
    Request.SET_VRING_ENABLE: Backend._set_vring_enable,
    Request.GET_CONFIG: Backend._get_config,
    Request.SET_CONFIG: Backend._set_config,
}

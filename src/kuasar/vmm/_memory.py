"""Guest memory mapped from the descriptors of SET_MEM_TABLE (IO: ``mmap``).

Layer contract: imports ``kuasar.errors`` and this package's :mod:`.vhost_user` and
:mod:`.virtqueue`; the only module of the package that calls ``mmap``.

Each region's descriptor (QEMU's ``memory-backend-memfd,share=on``) is mapped shared and writable
for ``mmap_offset + size`` bytes and indexed from ``mmap_offset`` (facts §2). The descriptors are
closed once mapped (``mmap`` keeps its own duplicate).
"""

from __future__ import annotations

import contextlib
import mmap
import os
from collections.abc import Sequence

from kuasar.errors import KuasarError
from kuasar.vmm.vhost_user import MemoryRegion
from kuasar.vmm.virtqueue import GuestMemory

__all__ = ["MappedMemory", "map_regions"]


class MappedMemory(GuestMemory):
    """:class:`GuestMemory` over ``mmap`` s it owns; :meth:`unmap` releases them."""

    def __init__(self, regions: Sequence[tuple[int, int, memoryview]], maps: Sequence[mmap.mmap]) -> None:
        super().__init__(regions)
        self._maps = list(maps)

    def unmap(self) -> None:
        """Unmap every region. A mapping still viewed by a live chain is left to the collector."""
        self.release()
        for mapping in self._maps:
            with contextlib.suppress(BufferError):
                mapping.close()
        self._maps.clear()


def map_regions(regions: Sequence[MemoryRegion], fds: Sequence[int]) -> MappedMemory:
    """Map one descriptor per region; every descriptor is closed, whatever happens.

    Raises:
        KuasarError: a region cannot be mapped (the message names it and the errno).
    """
    maps: list[mmap.mmap] = []
    views: list[tuple[int, int, memoryview]] = []
    try:
        for index, (region, fd) in enumerate(zip(regions, fds, strict=True)):
            try:
                mapping = mmap.mmap(fd, region.mmap_offset + region.size, mmap.MAP_SHARED)
            except (OSError, ValueError, OverflowError) as exc:
                raise KuasarError(f"cannot map memory region {index} ({region}): {exc}") from exc
            maps.append(mapping)
            start = region.mmap_offset
            views.append(
                (region.guest_addr, region.user_addr, memoryview(mapping)[start : start + region.size])
            )
    except BaseException:
        for _, _, view in views:
            view.release()
        for mapping in maps:
            mapping.close()
        raise
    finally:
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
    return MappedMemory(views, maps)

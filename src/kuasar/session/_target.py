"""Where a guest's ports are: the agent API address, the debug console address, and a label.

Layer contract: bottom of ``kuasar.session``; ``kuasar.address`` and ``kuasar.config`` only (plain
data: the blocking and the asyncio drivers both start from it).
"""

from __future__ import annotations

from kuasar._record import Record
from kuasar.address import Address, HvsockAddress, UnixAddress, parse_address, with_port
from kuasar.config import AGENT_PORT, CONSOLE_PORT


class GuestTarget(Record):
    """Where a guest's ports are.

    Attributes:
        api: the agent API address (port 1024), or ``None`` when the target has none.
        console: the debug console address.
        label: how messages name it (a sandbox ID or the address).
    """

    api: Address | None
    console: Address
    label: str

    @classmethod
    def for_socket(cls, path: str, *, console_port: int | None = None, label: str = "") -> GuestTarget:
        """A sandbox's hybrid vsock socket (``ROOT/ID/task.socket`` or ``task.vsock``)."""
        return cls(
            HvsockAddress(path, AGENT_PORT),
            HvsockAddress(path, console_port or CONSOLE_PORT),
            f"{label} ({path})" if label else path,
        )

    @classmethod
    def for_address(cls, text: str, *, console_port: int | None = None) -> GuestTarget:
        """An address string; a port in it names the console when ``console_port`` is not given."""
        address = parse_address(text)
        console = address
        if console_port is not None or not isinstance(address, HvsockAddress):
            console = with_port(address, console_port or CONSOLE_PORT)
        api = (
            None if isinstance(address, UnixAddress) and address.abstract else with_port(address, AGENT_PORT)
        )
        return cls(api, console, text)

    @classmethod
    def agent_only(cls, address: Address) -> GuestTarget:
        """An agent port alone, to probe (its console address is the same: never dialled)."""
        return cls(address, address, str(address))

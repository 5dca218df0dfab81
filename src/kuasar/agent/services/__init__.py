"""The agent's ttrpc services, assembled in one place.

Layer contract: agent side; imports ttrpc and the service modules, nothing from ``kuasar.ctl`` or
``kuasar.sandbox``. ``agent_services(state_dir)`` returns the handler maps ``kuasar-agent`` serves on
its API address and the owners of long-lived resources (containers), closed at shutdown.
"""

from __future__ import annotations

import os

from kuasar import ttrpc
from kuasar.agent.containers import ContainerManager
from kuasar.agent.logs import LogStore
from kuasar.agent.services.containers import container_handlers
from kuasar.agent.services.exec import exec_handlers
from kuasar.agent.services.sandbox import SandboxServiceConfig, SandboxServiceState, sandbox_handlers
from kuasar.config import DEFAULT_LIMITS, Limits
from kuasar.ttrpc.service import HandlerMap

DEFAULT_STATE_DIR = "/run/kuasar-agent"


class AgentServices:
    """What ``kuasar-agent`` serves: ``handlers`` (ttrpc maps), plus the resources behind them."""

    def __init__(
        self,
        state_dir: str | None = None,
        *,
        vm_guest: bool = False,
        limits: Limits = DEFAULT_LIMITS,
        home: str | None = None,
    ) -> None:
        """Args:
        state_dir: containers' runc root, state and logs live below it.
        vm_guest: the agent is PID 1 of a real VM: SandboxService may change hostname, DNS,
            network and clock. Otherwise (a local sandbox on a shared host) it only reports.
        limits: every bound of the services and the processes they start.
        home: HOME of the commands ``Exec`` runs in the guest without a user.
        """
        base = state_dir or DEFAULT_STATE_DIR
        self.containers = ContainerManager(
            LogStore(os.path.join(base, "logs")),
            root=os.path.join(base, "runc"),
            state_dir=os.path.join(base, "containers"),
            limits=limits,
        )
        config = SandboxServiceConfig.vm_guest() if vm_guest else SandboxServiceConfig()
        #: SandboxService state; ``sandbox.events.publish_oom(id)`` feeds GetEvents.
        self.sandbox = SandboxServiceState(config)
        self.handlers: list[HandlerMap] = [
            ttrpc.health_handlers(),
            exec_handlers(self.containers, limits=limits, home=home),
            container_handlers(self.containers, limits=limits),
            sandbox_handlers(self.sandbox, limits=limits),
        ]

    def owns_pid(self, pid: int) -> bool:
        """True for processes whose exit status an owner waits for (container inits)."""
        return self.containers.owns_pid(pid)

    async def close(self) -> None:
        await self.containers.close()
        self.containers.logs.close()

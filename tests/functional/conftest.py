"""Fixtures shared by the functional tests: the tmux server, and the guest stand-ins."""

from tests.functional.guests import (
    booting_guest,
    crashed_vmm,
    denied_guest,
    hung_vmm,
    kata_guest,
    missing_root,
    mute_guest,
    vmm_task_console_guest,
    vmm_task_guest,
)
from tests.functional.tmux_helpers import tmux

__all__ = [
    "booting_guest",
    "crashed_vmm",
    "denied_guest",
    "hung_vmm",
    "kata_guest",
    "missing_root",
    "mute_guest",
    "tmux",
    "vmm_task_console_guest",
    "vmm_task_guest",
]

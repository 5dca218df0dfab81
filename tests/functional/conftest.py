"""Fixtures shared by the functional tests."""

from tests.functional.tmux_helpers import tmux

__all__ = ["tmux"]

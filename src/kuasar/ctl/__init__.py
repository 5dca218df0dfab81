"""``kuasarctl``, the host CLI (top layer: only this package prints or exits)."""

"""``python -m kuasar.ctl``: the same as the ``kuasarctl`` script."""

from kuasar.ctl.main import run

run()

"""``python -m kuasar.ctl``: the same as the ``kuasarctl`` script."""

import sys

from kuasar.ctl.main import main

sys.exit(main())

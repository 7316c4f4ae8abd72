"""``python -m ztfsds``: the same as the ``ztfsds`` command."""

import sys

from .cli import main

sys.exit(main())

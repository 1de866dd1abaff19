"""``python -m rv2dist``: the command line, as the ``rv2dist`` command."""

import sys

from .cli import main

sys.exit(main())

"""``python -m rv2dist``: the command line, as the ``rv2dist`` command."""

import sys

from rv2dist.cli.app import main

sys.exit(main())

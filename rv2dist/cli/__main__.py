"""``python -m rv2dist.cli``: the command line."""

import sys

from rv2dist.cli.app import main

sys.exit(main())

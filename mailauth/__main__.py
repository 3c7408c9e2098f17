"""``python -m mailauth``: the command line."""

import sys

from mailauth.cli import main

sys.exit(main())

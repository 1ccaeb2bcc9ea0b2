"""``python -m revisor``: the same as the ``revisor`` command."""

import sys

from revisor.cli import main

sys.exit(main())

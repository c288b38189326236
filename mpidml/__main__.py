"""``python -m mpidml ...`` is the same as the ``mpidml`` command."""

import sys

from .cli import main

sys.exit(main())

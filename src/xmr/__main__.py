"""``python -m xmr`` = the ``xmr`` command."""

from __future__ import annotations

import sys

from xmr.cli import main

sys.exit(main())

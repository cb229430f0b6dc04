"""`python -m pagkd_core ...` (see pagkd_core/cli.py)."""

import sys

from pagkd_core.cli import main

sys.exit(main())

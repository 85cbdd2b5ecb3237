"""`python -m pipeline ...`: the same command as `cfdg ...` (pipeline/cli.py)."""

import sys

from pipeline.cli import main

sys.exit(main())

"""`python -m pipeline.study ...`: the same as `cfdg study ...` (pipeline/study/cli.py)."""

import sys

from pipeline.study.cli import main

sys.exit(main())

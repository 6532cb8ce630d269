"""`python -m flows.cli` runs `r1f`."""

import sys

from flows.cli import main

sys.exit(main())

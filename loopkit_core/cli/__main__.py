"""`python -m loopkit_core.cli`: the `loopkit` command."""

import sys

from loopkit_core.cli import main

sys.exit(main())

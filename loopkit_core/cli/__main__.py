"""`python -m loopkit_core.cli`: the `loopkit` command."""

import sys

from loopkit_core.cli import main

if __name__ == "__main__":  # importing the module (pkgutil walks, tooling) must not run the command
    sys.exit(main())

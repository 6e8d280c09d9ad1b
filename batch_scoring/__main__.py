"""`python -m batch_scoring ...`: see batch_scoring.cli."""

import sys

from batch_scoring.cli import main

if __name__ == "__main__":
    sys.exit(main())

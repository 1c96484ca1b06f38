"""``python -m vaebias`` runs the command line."""

import sys

from vaebias.cli import main

if __name__ == "__main__":
    sys.exit(main())

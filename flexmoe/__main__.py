"""``python -m flexmoe``: the ``flexmoe`` command line."""

import sys

from flexmoe.cli import main

if __name__ == "__main__":
    sys.exit(main())

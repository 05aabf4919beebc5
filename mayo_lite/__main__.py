"""`python -m mayo_lite ARGS` is the `my` command."""

import sys

from mayo_lite.cli import main

sys.exit(main())

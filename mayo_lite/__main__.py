"""`python -m mayo_lite ARGS` is the `my` command."""

import sys

from mayo_lite.errors import caused_by_interrupt

try:
    from mayo_lite.cli import main_exit
except (KeyboardInterrupt, ImportError) as error:
    # Ctrl-C while Python is still importing: one line, not a traceback (a C extension interrupted while it loads
    # re-raises the interrupt as an ImportError).
    if not caused_by_interrupt(error):
        raise
    print("my: interrupted", file=sys.stderr)
    sys.exit(130)

main_exit()

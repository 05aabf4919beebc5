"""`python -m mayo_lite ARGS` is the `my` command."""

import sys

try:
    from mayo_lite.cli import main_exit
except KeyboardInterrupt:  # Ctrl-C while Python is still importing: one line, not a traceback
    print("my: interrupted", file=sys.stderr)
    sys.exit(130)

main_exit()

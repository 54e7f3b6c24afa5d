"""`python -m autocompress.cli` runs the command line, like the `autocompress` script."""

import sys

from autocompress.cli import main

sys.exit(main())

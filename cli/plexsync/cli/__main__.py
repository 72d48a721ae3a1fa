"""`python -m plexsync.cli` is the `plexsync` command."""

import sys

from plexsync.cli.main import main

sys.exit(main())

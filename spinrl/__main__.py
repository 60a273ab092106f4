"""``python -m spinrl`` (and ``torchrun -m spinrl``) runs the CLI."""

import sys

from spinrl.cli.main import main

sys.exit(main())

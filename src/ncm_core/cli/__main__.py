"""``python -m ncm_core.cli``."""

import sys

from ncm_core.cli import main

sys.exit(main())

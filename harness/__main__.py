"""Allow `python -m harness` as an alias of `reco-harness`."""

import sys

from harness.cli import main

sys.exit(main())

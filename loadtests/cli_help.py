"""`python -m loadtests.cli_help`: Locust's options with the locustfile's own.

Locust prints its help before it imports a locustfile, so ``locust -f loadtests/locustfile.py
--help`` never lists the options the locustfile adds (--retry-budget, --run-dir, ...).
Importing the locustfile first registers them on the parser Locust builds.
"""

from __future__ import annotations

import sys

from locust.argument_parser import get_parser  # first: importing Locust patches with gevent

import loadtests.locustfile  # noqa: F401 - its hooks add the options


def main() -> int:
    """Print the help ``locust -f loadtests/locustfile.py`` would give with our options."""
    get_parser(default_config_files=[]).print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())

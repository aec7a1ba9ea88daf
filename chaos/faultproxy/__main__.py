"""Run the server: python -m chaos.faultproxy -host 127.0.0.1 -port 8474."""

import sys

from chaos.faultproxy.cli import main

if __name__ == "__main__":
    sys.exit(main())

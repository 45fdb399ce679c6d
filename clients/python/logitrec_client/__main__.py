"""`python -m logitrec_client` runs the logitrec-client CLI."""

import sys

from logitrec_client.cli import main

sys.exit(main())

"""`python -m minillm_dash`: the command line."""

import sys

from minillm_dash.cli import main

sys.exit(main())

"""Start the minillm-dash dashboard (see README)."""

import sys

if __name__ == "__main__":
    print("The dashboard is not built yet; run `python -m minillm_dash --help` for the command line.")
    sys.exit(0)

"""``python -m cellfuse ARGS...``: the cellfuse command line (``python -m cellfuse --help``)."""
import sys

from ._cli import main

sys.exit(main())

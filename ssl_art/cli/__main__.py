"""``python -m ssl_art.cli ARGS`` is ``ssl-art ARGS``."""

import sys

from ssl_art.cli import main

sys.exit(main())

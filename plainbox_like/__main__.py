"""``python -m plainbox_like`` is the same as the ``plainbox-like`` command."""

import sys

from plainbox_like.cli.main import main

sys.exit(main())

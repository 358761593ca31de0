"""``python -m attnbench`` is the same as the ``attnbench`` console script."""
import sys

from .cli import main

sys.exit(main())

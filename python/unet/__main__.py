"""``python -m unet``: the same as the ``unet`` command."""
import sys

from .cli import main

sys.exit(main())

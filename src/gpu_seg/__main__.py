"""``python -m gpu_seg`` runs the ``gpu-seg`` command line."""

import sys

from .cli import main

sys.exit(main())

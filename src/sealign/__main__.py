"""``python -m sealign`` (e.g. under ``torchrun -m sealign``)."""

import sys

from sealign.cli import main

sys.exit(main())

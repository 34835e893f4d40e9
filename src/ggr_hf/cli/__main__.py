"""`python -m ggr_hf.cli ...` (also `accelerate launch -m ggr_hf.cli train ...`)."""

import sys

from ggr_hf.cli import main

sys.exit(main())

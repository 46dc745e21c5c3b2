"""`python -m helium_trt`: the `helium-trt` command line."""

import sys

from helium_trt.server.cli import main

sys.exit(main())

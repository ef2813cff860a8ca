"""`python -m mnist_mlp` runs the command line."""

import sys

from mnist_mlp.cli import main

sys.exit(main())

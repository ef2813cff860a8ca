"""`python -m mnist_mlp` runs the command line."""

from mnist_mlp.cli import console_main

console_main()

"""`python -m pumlc_cli` runs the CLI (used by torchrun re-launches and tests)."""

from pumlc_cli.cli import main

main()

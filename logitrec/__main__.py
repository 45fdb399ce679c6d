"""`python -m logitrec` runs the CLI."""

from logitrec.cli import main

main()

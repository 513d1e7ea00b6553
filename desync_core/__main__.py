"""``python -m desync_core`` runs the CLI."""

from desync_core.cli import main

main()

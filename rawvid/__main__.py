"""``python -m rawvid`` runs the command-line interface."""
from .cli import main

main()

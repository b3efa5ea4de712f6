"""``python -m epiformer_cli`` (also what ``torchrun -m epiformer_cli`` runs)."""

from epiformer_cli.cli.app import main

if __name__ == "__main__":
    main()

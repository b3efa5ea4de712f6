"""``python -m epiformer_cli`` (also what ``torchrun -m epiformer_cli`` runs)."""

from epiformer_cli.cli.app import main  # imports no torch: main() sets the wait policy before it loads

if __name__ == "__main__":
    main()

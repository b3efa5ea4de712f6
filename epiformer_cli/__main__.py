"""``python -m epiformer_cli`` (also what ``torchrun -m epiformer_cli`` runs)."""

from epiformer_cli.threads import set_wait_policy

if __name__ == "__main__":
    set_wait_policy()  # before anything imports torch (main() sets it too; a user's own value is kept)
    from epiformer_cli.cli.app import main

    main()

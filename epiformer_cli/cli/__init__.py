"""The command-line face: one small module per subcommand, assembled in :mod:`epiformer_cli.cli.app`."""

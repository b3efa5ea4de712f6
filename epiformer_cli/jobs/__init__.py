"""The jobs: plain functions a notebook can call, each behind one subcommand."""

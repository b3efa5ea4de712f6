"""Training machinery used by :mod:`epiformer_cli.jobs.train`: losses, metrics, the learning-rate
schedule, checkpoints, multi-process helpers and the learning-curve plot."""

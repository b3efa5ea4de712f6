"""Training machinery used by :mod:`epiformer_cli.jobs.train`: the :class:`~.trainer.Trainer` (one
run's state and loop), its data loaders, losses, metrics and the ``metrics.tsv`` table, the
learning-rate schedule, checkpoints, multi-process helpers and the learning-curve plot."""

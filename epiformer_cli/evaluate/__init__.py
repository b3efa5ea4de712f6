"""Evaluate: how well a model's predictions follow observed tracks, per track and across tracks.

* :mod:`.metrics`: the numbers, as pure functions of arrays (correlations of log(x + 1), ranks
  with ties, AUROC/AUPRC, cell-type specificity, the track-by-track matrix);
* :mod:`.bins`: what was evaluated: the bins' predictions and targets, peaks, example loci;
* :mod:`.score`: all of a run's numbers from its bins (:func:`~.score.score_bins`);
* :mod:`.plots`: heatmap.png, scatter.png, loci.png; :mod:`.report`: report.html.

The job that predicts and writes them is :func:`epiformer_cli.jobs.evaluate.evaluate_model`.
"""

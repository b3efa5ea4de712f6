"""Data layout and stores: window tiling, input encoding (one-hot, reverse complement), the training
store and its dataset, the prediction store. The run machinery they use lives in :mod:`epiformer_cli.runs`."""

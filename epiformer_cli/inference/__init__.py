"""The shared inference engine: batching, device and precision, test-time averaging (reverse
complement, shifts), and background reading/writing. ``predict`` and ``score-variants`` use it.

Typical use::

    from epiformer_cli.inference import InferenceEngine, WindowReader
    engine = InferenceEngine(loaded.model, device="auto", precision="fp32", rc_average=True)
    reader = WindowReader(genome, cons_bigwig, context=engine.context)
    codes, cons = reader.windows("chr1", [window.start], engine.config.seq_len)
    preds = engine.predict(codes, cons)          # (1, tracks, out_bins) float32
"""

from epiformer_cli.inference.engine import EngineStats, InferenceEngine, View, default_batch_size, parse_shifts
from epiformer_cli.inference.pipeline import BackgroundWriter, Prefetcher
from epiformer_cli.inference.reader import WindowReader

__all__ = [
    "BackgroundWriter",
    "EngineStats",
    "InferenceEngine",
    "Prefetcher",
    "View",
    "WindowReader",
    "default_batch_size",
    "parse_shifts",
]

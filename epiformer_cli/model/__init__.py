"""The Epiformer model: typed config and presets, the model families (the network of each, its fast
inference form), the model file.

Importing this package imports torch; only commands that need the model import it.
"""

from epiformer_cli.model.config import PRESETS, ModelConfig, exponential_channels, load_config, preset, save_config
from epiformer_cli.model.families import ModelFamily, build_network, family
from epiformer_cli.model.fast import FastEpiformer, prepare_for_inference
from epiformer_cli.model.modelfile import FORMAT_VERSION, LoadedModel, load_model, save_model
from epiformer_cli.model.network import Epiformer, count_parameters
from epiformer_cli.model.published import PublishedEpiformer

__all__ = [
    "FORMAT_VERSION",
    "PRESETS",
    "Epiformer",
    "PublishedEpiformer",
    "FastEpiformer",
    "LoadedModel",
    "ModelConfig",
    "ModelFamily",
    "build_network",
    "count_parameters",
    "exponential_channels",
    "family",
    "load_config",
    "load_model",
    "prepare_for_inference",
    "preset",
    "save_config",
    "save_model",
]

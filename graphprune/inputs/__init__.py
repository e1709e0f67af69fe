"""Model inputs, from one place: specs (shapes), valid random feeds, and batches from ``--data``.

The self-check, the oracle, bench, fidelity (and later calibration) all draw from here.
"""

from graphprune.inputs.domains import ValueDomain, value_domains
from graphprune.inputs.feeds import Batch, random_array, random_batches
from graphprune.inputs.load import (
    DEFAULT_SAMPLES,
    Inputs,
    inputs_for_models,
    load_inputs,
    valid_feeds,
)
from graphprune.inputs.specs import InputSpec, parse_input_shapes, read_interface, resolve_specs

__all__ = [
    "DEFAULT_SAMPLES", "Batch", "InputSpec", "Inputs", "ValueDomain", "inputs_for_models",
    "load_inputs", "parse_input_shapes", "random_array", "random_batches", "read_interface",
    "resolve_specs", "valid_feeds", "value_domains",
]

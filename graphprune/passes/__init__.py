"""Rewrite passes, one per file, composed by :func:`graphprune.prune`."""

from graphprune.passes.cleanup import CleanupPass
from graphprune.passes.freeze_static_values import FreezeStaticValuesPass
from graphprune.passes.rewrite_shape_constants import RewriteShapeConstantsPass
from graphprune.passes.slice_parameters import SliceParametersPass
from graphprune.passes.update_value_shapes import UpdateValueShapesPass

__all__ = [
    "CleanupPass",
    "FreezeStaticValuesPass",
    "RewriteShapeConstantsPass", "SliceParametersPass", "UpdateValueShapesPass"]

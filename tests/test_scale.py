"""Linear growth guards, without clocks: counted work at two graph sizes, and one job end to end.

Work is counted two ways while a stage runs on synthetic CNN-like graphs of ``N`` and ``4N``
nodes (benchmarks/scale.py): Python function calls (cProfile's call counts, C functions included)
and numpy elements (the sizes of the arrays going into and coming out of common numpy calls, so a
full-length array built or scanned once per group shows up). A stage whose work grows by more
than ``4 * SLACK`` between the two sizes is super-linear.
"""

from __future__ import annotations

import collections
import cProfile
import functools
import pstats

import numpy as np
import onnx_ir as ir
import pytest

import graphprune
from benchmarks.scale import build
from graphprune._io import infer_shapes
from graphprune.allocation import uniform_allocation
from graphprune.analysis import PrunePlan, analyze_channels
from graphprune.cli import main
from graphprune.importance import SCORERS, ScoringContext
from graphprune.report import plots
from graphprune.report.costs import count_costs

SMALL = 300
SLACK = 1.35  # fixed costs make small graphs relatively dearer; quadratic work grows by 16
_COUNTED = ("zeros", "zeros_like", "ones", "full", "arange", "flatnonzero", "nonzero", "unique",
            "concatenate", "repeat", "argsort", "sort", "setdiff1d", "isin", "where", "cumsum")


def _elements(result) -> int:
    items = result if isinstance(result, tuple) else (result,)
    return sum(int(x.size) for x in items if isinstance(x, np.ndarray))


@pytest.fixture
def numpy_elements(monkeypatch):
    """Counts the elements of the arrays passed to and returned by common numpy functions."""
    counter = {"elements": 0}
    for name in _COUNTED:
        original = getattr(np, name)

        @functools.wraps(original)
        def counted(*args, _original=original, **kwargs):
            result = _original(*args, **kwargs)
            counter["elements"] += _elements(tuple(args)) + _elements(result)
            return result

        monkeypatch.setattr(np, name, counted)
    return counter


def _model(nodes: int) -> ir.Model:
    return infer_shapes(ir.serde.deserialize_model(build(nodes)))


def _stages(model: ir.Model) -> dict:
    """The job's stages on a loaded model, as zero-argument callables run in order."""
    state: dict = {}

    def analysis():
        state["analysis"] = analyze_channels(model)

    def allocation():
        scores = SCORERS["l1"](ScoringContext(state["analysis"], state["analysis"].model, None, 0))
        state["removed"] = uniform_allocation(state["analysis"], scores, 0.5, 16)

    def plan():
        state["plan"] = PrunePlan(state["analysis"], state["removed"])
        list(state["plan"].changed_axes())

    def costs():
        count_costs(model)

    def rewrite():
        graphprune.prune(model, 0.5, removed=state["removed"])

    return {"analysis": analysis, "allocation": allocation, "plan": plan, "costs": costs,
            "rewrite": rewrite}


def _work(nodes: int, counter: dict) -> dict[str, tuple[int, int]]:
    """Per stage: (Python and C function calls, numpy elements)."""
    model = _model(nodes)
    work = {}
    for name, stage in _stages(model).items():
        before = counter["elements"]
        profile = cProfile.Profile()
        profile.runcall(stage)
        calls = sum(stat[1] for stat in pstats.Stats(profile).stats.values())
        work[name] = (calls, counter["elements"] - before)
    return work


def test_every_stage_does_linear_work(numpy_elements):
    small, large = _work(SMALL, numpy_elements), _work(4 * SMALL, numpy_elements)
    for stage in small:
        for kind, a, b in zip(("calls", "numpy elements"), small[stage], large[stage],
                              strict=True):
            assert b <= 4 * SLACK * max(a, 1), f"{stage}: {kind} grew {b / max(a, 1):.1f}x"


@pytest.fixture
def list_scans(monkeypatch):
    """Counts the entries scanned by ``in``, ``index``, ``remove`` and ``count`` on IR lists."""
    counter = {"entries": 0}
    for name in ("__contains__", "index", "remove", "count"):
        original = getattr(collections.UserList, name)

        def scanning(self, *args, _original=original, **kwargs):
            counter["entries"] += len(self.data)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(collections.UserList, name, scanning)
    return counter


def test_load_does_linear_work(list_scans):
    """Shape inference on load: onnx-ir's pass scans the input list once per initializer."""
    work = []
    for nodes in (SMALL, 4 * SMALL):
        proto = build(nodes)
        before = list_scans["entries"]
        profile = cProfile.Profile()
        profile.runcall(lambda p=proto: infer_shapes(ir.serde.deserialize_model(p)))
        calls = sum(stat[1] for stat in pstats.Stats(profile).stats.values())
        work.append((calls, list_scans["entries"] - before))
    for kind, a, b in zip(("calls", "list entries scanned"), *work, strict=True):
        assert b <= 4 * SLACK * max(a, 1), f"load: {kind} grew {b / max(a, 1):.1f}x"


def test_shape_inference_keeps_initializers_and_inputs():
    model = ir.serde.deserialize_model(build(60))
    names = list(model.graph.initializers)
    inputs = [v.name for v in model.graph.inputs]
    infer_shapes(model)
    assert sorted(model.graph.initializers) == sorted(names)
    assert [v.name for v in model.graph.inputs] == inputs
    assert all(v.const_value is not None for v in model.graph.initializers.values())
    assert all(v.shape is not None for node in model.graph for v in node.outputs)


def test_long_series_are_summed_into_bounded_bars():
    values = np.arange(1, 1001, dtype=float)
    binned = plots._binned(values, 200)
    assert len(binned) == 200 and binned.sum() == values.sum()
    assert np.array_equal(plots._binned(values[:50], 200), values[:50])


def test_job_end_to_end_on_a_large_graph(tmp_path):
    """Not timed: a graph of a few thousand nodes goes through the whole CLI job."""
    model = tmp_path / "big.onnx"
    import onnx

    onnx.save(build(2000), str(model))
    out = tmp_path / "big.pruned.onnx"
    assert main([str(model), "--ratio", "0.5", "--no-bench", "-o", str(out)]) == 0
    assert out.is_file() and out.with_name("big.pruned.report.html").is_file()
    assert main(["analyze", str(model)]) == 0


def test_analysis_reads_each_weight_shape_once(monkeypatch):
    """Each weight's shape object is built once during the analysis.

    A tensor read from a proto builds a new shape object on every access, and rules and the
    axis table ask several times per node; the dims are now kept per tensor.
    """
    from onnx_ir import _core

    model = _model(SMALL)
    built = {"shapes": 0}
    original = _core.Shape.__init__

    def counted(self, *args, **kwargs):
        built["shapes"] += 1
        original(self, *args, **kwargs)

    monkeypatch.setattr(_core.Shape, "__init__", counted)
    analyze_channels(model)
    assert 0 < built["shapes"] <= len(model.graph.initializers)


def test_a_plan_answers_unchanged_axes_without_numpy():
    """An axis that loses nothing is answered from a dictionary, without numpy.

    The passes and the cost model ask a plan about every axis of every value.
    """
    model = _model(SMALL)
    analysis = analyze_channels(model)
    group = analysis.groups[len(analysis.groups) // 2]
    plan = PrunePlan(analysis, group.classes[:1])  # one channel of one group
    values = {id(v): v for node in model.graph for v in (*node.inputs, *node.outputs)
              if v is not None}
    questions = [(v, axis) for v in values.values() for axis in range(len(v.shape or ()))]
    assert len(questions) > 1000

    def ask():
        return sum(plan.kept(v, axis) is not None for v, axis in questions)

    profile = cProfile.Profile()
    changed = profile.runcall(ask)
    numpy_calls = sum(stat[1] for key, stat in pstats.Stats(profile).stats.items()
                      if "numpy" in key[0] or "numpy" in key[2])
    assert 0 < changed <= len(group.axes)
    assert numpy_calls <= 20 * len(group.axes) + 50, numpy_calls


def test_subgraph_walk_looks_only_at_nodes_with_attributes():
    """``has_external_data`` and the destination checks walk every graph (3 walks per save).

    onnx-ir's recursive iterator costs about 19 calls per node here; a few are enough.
    """
    from graphprune import _io

    model = _model(4 * SMALL)
    profile = cProfile.Profile()
    profile.runcall(lambda: list(_io._graphs(model.graph)))
    calls = sum(stat[1] for stat in pstats.Stats(profile).stats.values())
    assert calls <= 8 * len(model.graph), calls

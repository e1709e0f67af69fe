"""One sensitivity trial: prune one group alone at one ratio, measure the output change.

A :class:`Job` is what every worker receives once (the model's path, the calibration data or
where to load it, the per-class scores); a :class:`Worker` built from it loads the model, its
analysis, the batches and the original's outputs on them, once. A trial is ``(group index,
ratio)``: the group keeps ``keep_count(n, ratio, step)`` of its best-scored classes (the
uniform allocator's choice for that group alone, every other group whole), a clone of the
loaded model is pruned with those labels, run on the batches and compared with the original
(:func:`graphprune.bench.fidelity.compare_outputs`).

onnxruntime runs with one intra-op thread in every worker, so the outputs, and the table, are
the same whatever the executor and however many workers there are.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from graphprune.bench.fidelity import compare_outputs

Trial = tuple[int, float]  # (group index, ratio)
THREADS = 1  # intra-op threads per worker session: parallelism is across trials


@dataclasses.dataclass(frozen=True)
class Job:
    """What every worker is given once.

    Attributes:
        model: Path of the original model.
        scores: Per-class scores of the original (higher is more important).
        data: A ``--data`` path, the batches themselves, or None for valid random feeds.
        samples: Most batches used.
        seed: Seed of random feeds.
        round_to: Kept counts are rounded up to a multiple of this.
        exclude: fnmatch patterns of node names left untouched.
        input_shapes: Sizes of symbolic input dims by input name.
    """

    model: str
    scores: np.ndarray
    data: str | Sequence[Mapping[str, np.ndarray]] | None = None
    samples: int | None = None
    seed: int = 0
    round_to: int = 1
    exclude: tuple[str, ...] = ()
    input_shapes: Mapping[str, tuple[int, ...]] | None = None


def job_batches(job: Job) -> tuple[dict[str, np.ndarray], ...]:
    """The job's batches: given, loaded from ``job.data``, or valid random feeds."""
    if job.data is not None and not isinstance(job.data, str):
        return tuple(dict(b) for b in job.data)
    from graphprune.inputs import load_inputs

    return load_inputs(job.model, job.input_shapes, job.data, job.samples, job.seed).batches


def _session(model):
    import onnxruntime as ort

    from graphprune.calibration import model_proto

    proto, folder = model_proto(model)
    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if folder is not None:
        options.add_session_config_entry(
            "session.model_external_initializers_file_folder_path", str(folder))
    return ort.InferenceSession(proto.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


def run_outputs(model, batches) -> tuple[list[str], list[list[np.ndarray]]]:
    """Output names and outputs per batch of ``model`` (onnx-ir or a path) on ``batches``."""
    session = _session(model)
    names = [o.name for o in session.get_outputs()]
    inputs = {i.name for i in session.get_inputs()}
    return names, [session.run(None, {k: v for k, v in b.items() if k in inputs})
                   for b in batches]


def _number(value) -> float | None:
    return None if value is None else float(value)


class Worker:
    """Holds one loaded model, its analysis and reference outputs; runs trials on clones."""

    def __init__(self, job: Job) -> None:
        from graphprune._io import load_model
        from graphprune.analysis import analyze_channels
        from graphprune.report.costs import CostModel

        self.job = job
        self.model = load_model(job.model)
        self.analysis = analyze_channels(self.model, job.exclude)
        self.costs = CostModel(self.model, job.input_shapes).costs()
        self.batches = job_batches(job)
        self.names, self.reference = run_outputs(self.model, self.batches)

    def removal(self, trial: Trial) -> np.ndarray:
        """Class labels the trial removes (the group alone, best-scored classes kept)."""
        from graphprune.allocation.uniform import group_removal, group_step, keep_count

        group = self.analysis.groups[trial[0]]
        step = group_step(self.analysis, group, self.job.round_to)
        keep = keep_count(len(group.classes), trial[1], step)
        return group_removal(self.analysis, group, self.job.scores, keep)

    def run(self, trial: Trial) -> dict:
        """The trial's record: group, ratio, channels and MACs after, output change."""
        import graphprune
        from graphprune.errors import GraphpruneError

        index, ratio = trial
        group = self.analysis.groups[index]
        record = {"group": group.name, "index": index, "kind": group.kind,
                  "ratio": float(ratio), "classes": len(group.classes),
                  "channels_before": group.root.size}
        labels = self.removal(trial)
        record["removed"] = len(labels)
        if not len(labels):  # rounding keeps the whole group: the original, unchanged
            return {**record, "channels_after": group.root.size, "macs": self.costs.macs,
                    "params": self.costs.params,
                    "rel_l2": 0.0, "cosine": 1.0, "top1_agreement": self._top1_same()}
        try:
            result = graphprune.prune(self.model.clone(), removed=labels,
                                      round_to=self.job.round_to, exclude=self.job.exclude,
                                      input_shapes=self.job.input_shapes)
            names, outputs = run_outputs(result.model, self.batches)
        except GraphpruneError as exc:
            return {**record, "error": str(exc)}
        metrics = compare_outputs(self.names, self.reference, outputs)
        if names != self.names or metrics.get("error"):
            return {**record, "error": metrics.get("error", "the outputs changed names")}
        return {**record, "channels_after": result.groups[index]["channels_after"],
                "macs": result.after.macs, "params": result.after.params,
                "rel_l2": _number(metrics["rel_l2"]),
                "cosine": _number(metrics["cosine"]),
                "top1_agreement": _number(metrics["top1_agreement"])}

    def _top1_same(self) -> float | None:
        same = compare_outputs(self.names, self.reference, self.reference)["top1_agreement"]
        return _number(same)

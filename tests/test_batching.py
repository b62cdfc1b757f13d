"""Continuous batching on the real default model: batched answers are the answers each request gets
alone, requests join a running batch and leave it, each with its own settings, and the queue is bounded."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest

from assistant.backends.base import BackendOverloaded, Finished, GenerationOptions, Message, TextPiece
from assistant.backends.batching import Request
from assistant.backends.hf import HFBackend, torch_default_threads
from assistant.backends.openings import DEPTH

QUESTIONS = [
    "Where is my parcel?",
    "How do I reset my password?",
    "Hi!",
    "Do you ship to Canada? Please answer in detail.",
]


@pytest.fixture(scope="module")
def backend(hf_backend: HFBackend) -> Iterator[HFBackend]:
    # float32 (without the 4-bit kernel, which rounds to bfloat16): a padded batch then computes each row
    # as it is computed alone, so greedy answers match exactly. In bfloat16 rows round differently with
    # the batch's shape, and an answer can fork late.
    batched = HFBackend(hf_backend._model_source, max_batch=4, max_queued=8, dtype="float32", four_bit=False)
    asyncio.run(batched.start())
    yield batched
    asyncio.run(batched.close())


async def answer(
    backend: HFBackend, question: str, options: GenerationOptions, system: str | None = None
) -> tuple[str, Finished, float]:
    """The answer's text, its ``Finished`` event, and when its first piece arrived."""
    text, first = "", 0.0
    messages: list[Message] = [{"role": "system", "content": system}] if system else []
    async for event in backend.stream([*messages, {"role": "user", "content": question}], options):
        if isinstance(event, TextPiece):
            text += event.text
            first = first or time.monotonic()
        else:
            return text, event, first
    raise AssertionError("no Finished event")


def test_batched_greedy_answers_are_the_answers_each_request_gets_alone(backend: HFBackend) -> None:
    lengths = [40, 12, 30, 25]
    options = [GenerationOptions(max_tokens=n, temperature=0) for n in lengths]

    async def run() -> tuple[list[tuple[str, Finished, float]], list[tuple[str, Finished, float]]]:
        alone = [await answer(backend, q, o) for q, o in zip(QUESTIONS, options, strict=True)]
        together = await asyncio.gather(
            *(answer(backend, q, o) for q, o in zip(QUESTIONS, options, strict=True))
        )
        return alone, list(together)

    alone, together = asyncio.run(run())
    assert [text for text, _, _ in together] == [text for text, _, _ in alone]
    for (_, finished, _), n in zip(together, lengths, strict=True):
        assert finished.completion_tokens <= n  # each request's own max_tokens
        assert finished.reason == ("length" if finished.completion_tokens == n else "stop")


def test_a_request_joins_a_running_batch_and_leaves_it_when_done(backend: HFBackend) -> None:
    long_options = GenerationOptions(max_tokens=120, temperature=0)
    short_options = GenerationOptions(max_tokens=10, temperature=0)

    async def run() -> tuple[str, bool, str]:
        before = backend.tokens_generated
        long = asyncio.create_task(answer(backend, QUESTIONS[3], long_options))
        while backend.tokens_generated < before + 5:  # the long one is decoding
            assert not long.done(), long.result()
            await asyncio.sleep(0.01)
        short, _, _ = await answer(backend, QUESTIONS[1], short_options)
        long_still_running = not long.done()
        await long
        alone, _, _ = await answer(backend, QUESTIONS[1], short_options)
        return short, long_still_running, alone

    short, long_still_running, alone = asyncio.run(run())
    assert long_still_running  # the short one did not wait for the running batch to finish
    assert short == alone  # admitted mid-batch (left-padded into the running cache): the same greedy answer


def test_each_request_keeps_its_own_seed_and_stop_sequence(backend: HFBackend) -> None:
    sampled = GenerationOptions(max_tokens=24, temperature=1.0, seed=11)

    async def run() -> list[tuple[str, Finished, float]]:
        return list(
            await asyncio.gather(
                answer(backend, QUESTIONS[0], sampled),
                answer(backend, QUESTIONS[0], sampled),
                answer(backend, QUESTIONS[0], GenerationOptions(max_tokens=24, temperature=1.0, seed=12)),
                answer(
                    backend, QUESTIONS[1], GenerationOptions(max_tokens=60, temperature=0, stop=("password",))
                ),
            )
        )

    first, again, other, stopped = asyncio.run(run())
    assert first[0] == again[0]  # the same seed in the same batch: the same sample
    assert first[0] != other[0]
    assert "password" in stopped[0] and stopped[1].completion_tokens < 60  # stopped generating there
    assert stopped[1].reason == "stop"


def test_a_closed_stream_leaves_the_batch_and_the_others_go_on(backend: HFBackend) -> None:
    async def run() -> tuple[int, tuple[str, Finished, float]]:
        other = asyncio.create_task(
            answer(backend, QUESTIONS[2], GenerationOptions(max_tokens=40, temperature=0))
        )
        stream = backend.stream(
            [{"role": "user", "content": QUESTIONS[3]}], GenerationOptions(max_tokens=200)
        )
        await anext(stream)
        await stream.aclose()
        deadline = time.monotonic() + 10
        while (
            (stats := backend.batch_stats()) is not None and stats.running > 1 and time.monotonic() < deadline
        ):
            await asyncio.sleep(0.01)
        running = stats.running if stats else -1
        return running, await other

    running, other = asyncio.run(run())
    assert running <= 1  # the closed request is gone from the batch
    assert other[1].completion_tokens > 0


def test_the_queue_is_bounded_and_a_request_waits_only_so_long(hf_backend: HFBackend) -> None:
    narrow = HFBackend(hf_backend._model_source, max_batch=1, max_queued=1, queue_timeout=0.5)
    asyncio.run(narrow.start())

    async def run() -> tuple[BaseException | None, BaseException | None]:
        long = asyncio.create_task(
            answer(narrow, QUESTIONS[3], GenerationOptions(max_tokens=60, temperature=0))
        )
        await asyncio.sleep(0.3)
        waiting = asyncio.create_task(answer(narrow, QUESTIONS[0], GenerationOptions(max_tokens=5)))
        await asyncio.sleep(0.1)
        try:
            await answer(narrow, QUESTIONS[1], GenerationOptions(max_tokens=5))
            full = None
        except BackendOverloaded as exc:
            full = exc
        try:
            await waiting  # it waits past queue_timeout while the long one holds the only place
            timed_out = None
        except BackendOverloaded as exc:
            timed_out = exc
        await long
        return full, timed_out

    try:
        full, timed_out = asyncio.run(run())
    finally:
        asyncio.run(narrow.close())
    assert isinstance(full, BackendOverloaded) and "waiting" in str(full)
    assert isinstance(timed_out, BackendOverloaded) and "waited" in str(timed_out)


SYSTEM = "You are the customer-service assistant of an online shop. Answer briefly and politely."


def test_a_shared_system_prompt_is_prefilled_once_and_answers_stay_the_same(
    backend: HFBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Prefix caching: the system message's KV cache is computed once and reused, requests admitted
    together prefill what follows it in one pass, and the answers are the ones a backend without the
    cache gives (float32: exactly)."""
    options = GenerationOptions(max_tokens=20, temperature=0)
    uncached = HFBackend(
        backend._model_source, max_batch=4, dtype="float32", four_bit=False, prefix_cache_size=0
    )
    asyncio.run(uncached.start())
    try:
        prompt = backend.prompt_ids(
            [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Hi"}]
        )
        shared = backend.shared_prefix(
            [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Hi"}], prompt
        )
        assert 0 < shared < len(prompt)
        assert backend.shared_prefix([{"role": "user", "content": "Hi"}], prompt) == 0  # no system message

        async def run(target: HFBackend) -> list[str]:
            assert target._batcher is not None
            alone = [(await answer(target, QUESTIONS[0], options, SYSTEM))[0]]
            with target._batcher._wake:  # the scheduler waits until all three are queued: admitted at once
                tasks = [asyncio.create_task(answer(target, q, options, SYSTEM)) for q in QUESTIONS[1:]]
                while len(target._batcher._waiting) < len(tasks):
                    await asyncio.sleep(0.01)
            together = await asyncio.gather(*tasks)
            return alone + [text for text, _, _ in together]

        assert backend._batcher is not None
        prefilled: list[int] = []  # requests per prefill after the cached prefix
        after_prefix = backend._batcher._prefill_after_prefix

        def counted(prefix: tuple[int, ...], requests: list[Request]) -> None:
            prefilled.append(len(requests))
            after_prefix(prefix, requests)

        monkeypatch.setattr(backend._batcher, "_prefill_after_prefix", counted)
        cached_answers, plain_answers = asyncio.run(run(backend)), asyncio.run(run(uncached))
        assert prefilled == [1, 3]  # the three admitted together are prefilled in one pass
        assert backend._batcher is not None and list(backend._batcher._prefixes) == [tuple(prompt[:shared])]
        assert uncached._batcher is not None and not uncached._batcher._prefixes
        assert cached_answers == plain_answers and all(cached_answers)
    finally:
        asyncio.run(uncached.close())


def test_prompts_after_a_cached_prefix_join_the_running_step_and_answer_as_alone(
    backend: HFBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A packed step: requests admitted while others decode are prefilled inside that decoding step's
    forward pass, with a drafted opening, and every answer is the one it gets alone without drafts
    (float32: exactly)."""
    questions, options = (
        [QUESTIONS[3], *QUESTIONS[:2]],
        [GenerationOptions(max_tokens=n, temperature=0) for n in (90, 25, 30)],
    )
    assert backend._batcher is not None
    batcher = backend._batcher
    packed: list[int] = []  # requests joining per packed step
    packed_step = batcher._packed_step

    def counted(last: object, positions: object, joining: list[Request]) -> None:
        packed.append(len(joining))
        packed_step(last, positions, joining)  # type: ignore[arg-type]

    monkeypatch.setattr(batcher, "_packed_step", counted)

    async def run() -> tuple[list[str], list[str]]:
        with monkeypatch.context() as undrafted:
            undrafted.setattr(batcher, "_openings", None)
            alone = [
                (await answer(backend, q, o, SYSTEM))[0] for q, o in zip(questions, options, strict=True)
            ]
        # Two earlier answers that opened like the second question's: the joining rows draft that.
        messages: list[Message] = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Hi"}]
        prompt = backend.prompt_ids(messages)
        opening = backend._tokenizer(alone[1], add_special_tokens=False)["input_ids"]
        assert batcher._openings is not None
        for _ in range(2):
            batcher._openings.record(tuple(prompt[: backend.shared_prefix(messages, prompt)]), opening)
        before = backend.tokens_generated
        first = asyncio.create_task(answer(backend, questions[0], options[0], SYSTEM))
        while backend.tokens_generated < before + 5:  # the first one is decoding
            await asyncio.sleep(0.01)
        with batcher._wake:  # the scheduler waits until both are queued: they join one step together
            later = [
                asyncio.create_task(answer(backend, q, o, SYSTEM))
                for q, o in zip(questions[1:], options[1:], strict=True)
            ]
            while len(batcher._waiting) < len(later):
                await asyncio.sleep(0.01)
        together = [await first, *await asyncio.gather(*later)]
        return alone, [text for text, _, _ in together]

    drafted, accepted = batcher.drafted, batcher.drafts_accepted
    alone, together = asyncio.run(run())
    assert packed == [2]  # both joined the running step together, neither was prefilled apart
    assert batcher.drafted - drafted >= 2 * DEPTH and batcher.drafts_accepted - accepted >= DEPTH
    assert together == alone and all(alone)


def test_drafted_openings_are_checked_in_the_prefill_and_answers_stay_the_same(
    backend: HFBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Openings drafted from earlier answers after the same system message: all of a draft the model
    confirms counts at once, the rest is masked out, and every answer is the one it gets without drafts
    (float32: exactly)."""
    system = "You answer for the returns desk of a bicycle shop. Keep answers short."  # a fresh prefix
    canada, stolen, mexico = (
        "Do you ship to Canada? Please answer in detail.",  # "I'm sorry for any confusion, but as a ..."
        "My bike was stolen from your shop's rack.",  # "I'm sorry to hear about ..."
        "Do you sell to Mexico? Please answer in detail.",  # "I sell to Mexico."
    )
    options = GenerationOptions(max_tokens=12, temperature=0)
    assert backend._batcher is not None
    batcher = backend._batcher

    async def texts(questions: list[str]) -> list[str]:
        return [(await answer(backend, q, options, system))[0] for q in questions]

    with monkeypatch.context() as undrafted:
        undrafted.setattr(batcher, "_openings", None)
        expected = asyncio.run(texts([canada, stolen, mexico]))

    def drafts(question: str) -> tuple[str, int, int]:
        """The answer, and the draft tokens it was given and had confirmed."""
        drafted, accepted = batcher.drafted, batcher.drafts_accepted
        (text,) = asyncio.run(texts([question]))
        return text, batcher.drafted - drafted, batcher.drafts_accepted - accepted

    assert drafts(canada) == (expected[0], 0, 0)  # nothing seen after this prefix yet
    assert drafts(canada) == (expected[0], 0, 0)  # one answer is not enough to draft from (MIN_SEEN)
    assert drafts(canada) == (expected[0], DEPTH, DEPTH)  # the same question: the whole draft holds
    text, drafted, accepted = drafts(stolen)
    assert (text, drafted) == (expected[1], DEPTH) and 0 < accepted < DEPTH  # "I'm sorry" holds, " for" not
    text, drafted, accepted = drafts(mexico)
    assert (text, drafted) == (expected[2], DEPTH) and accepted < DEPTH


def test_the_model_thread_keeps_its_torch_thread_count_when_another_thread_changes_it(
    backend: HFBackend,
) -> None:
    """A thread that sets its own PyTorch thread count (the semantic detector's worker sets 1) sets it
    for every thread that has not computed yet too: the scheduler thread keeps its own, set before or
    after, and decodes with it."""
    import torch

    from assistant.backends.batching import END, Batcher

    def limit_in_another_thread(threads: int) -> None:
        thread = threading.Thread(target=torch.set_num_threads, args=(threads,))
        thread.start()
        thread.join()

    default = torch_default_threads()
    counts: list[int] = []  # the scheduler thread's count at each token
    limit_in_another_thread(1)
    model, tokenizer = backend._loaded()
    batcher = Batcher(model, tokenizer, threads=2, on_token=lambda _: counts.append(torch.get_num_threads()))
    done = threading.Event()
    try:
        time.sleep(0.3)  # the scheduler thread has set its count, and waits for work
        limit_in_another_thread(1)
        prompt = backend.prompt_ids([{"role": "user", "content": QUESTIONS[2]}])
        options = GenerationOptions(max_tokens=3, temperature=0)
        batcher.submit(Request(prompt, options, lambda item: done.set() if item is END else None))
        assert done.wait(60)
    finally:
        batcher.close()
        limit_in_another_thread(default)
    assert counts and set(counts) == {2}


def test_model_threads_unset_decodes_on_every_core(monkeypatch: pytest.MonkeyPatch) -> None:
    from assistant.backends import hf

    monkeypatch.setattr(hf, "torch_default_threads", lambda: 2)
    assert HFBackend(lambda: "unused")._threads == 2
    assert HFBackend(lambda: "unused", threads=1)._threads == 1

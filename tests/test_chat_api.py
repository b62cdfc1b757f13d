"""The chat API on the real default model, through the official openai client."""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial

import openai
import pytest

from assistant.backends.hf import HFBackend
from assistant.chat import system_instruction, with_system
from assistant.model_store import resolve_model_dir
from assistant.settings import Settings
from tests.conftest import MODEL, Server

QUESTION = [{"role": "user", "content": "How do I reset my password?"}]


def ask(client: openai.OpenAI, messages: list[dict[str, str]] | None = None, **kwargs: object) -> object:
    return client.chat.completions.create(model=MODEL, messages=messages or QUESTION, **kwargs)  # type: ignore[call-overload]


def test_non_streaming_answer(client: openai.OpenAI) -> None:
    response = ask(client, max_tokens=12, temperature=0)
    choice = response.choices[0]
    assert response.object == "chat.completion"
    assert response.id.startswith("chatcmpl-")
    assert response.model == MODEL
    assert choice.message.role == "assistant"
    assert choice.message.content.strip()
    assert choice.finish_reason == "length"
    assert response.usage.completion_tokens == 12
    assert response.usage.total_tokens == response.usage.prompt_tokens + 12


def test_streaming_equals_non_streaming_at_temperature_zero(client: openai.OpenAI) -> None:
    whole = ask(client, max_tokens=20, temperature=0)
    chunks = list(
        ask(client, max_tokens=20, temperature=0, stream=True, stream_options={"include_usage": True})
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 3  # really streamed
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == ["length"]
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == 20
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens


def test_usage_counts_are_the_tokenizers(client: openai.OpenAI, server: Server) -> None:
    backend = server.backends[MODEL]
    tokenizer = backend._loaded()[1]  # type: ignore[attr-defined]
    response = ask(client, max_tokens=10, temperature=0, extra_body={"style": "formal"})
    instruction = system_instruction(server.settings.chat.system_prompt, "formal", {})
    rendered = tokenizer.apply_chat_template(with_system(QUESTION, instruction), add_generation_prompt=True)
    ids = rendered["input_ids"] if isinstance(rendered, dict) or hasattr(rendered, "keys") else rendered
    assert response.usage.prompt_tokens == len(ids)
    content = response.choices[0].message.content
    assert response.usage.completion_tokens == len(tokenizer(content, add_special_tokens=False)["input_ids"])


def test_stop_sequence_cuts_the_answer(client: openai.OpenAI) -> None:
    full = ask(client, max_tokens=30, temperature=0).choices[0].message.content
    words = re.findall(r"[A-Za-z]{4,}", full)
    stop = words[len(words) // 2]
    cut = ask(client, max_tokens=30, temperature=0, stop=[stop, "zzzz-never"])
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].message.content == full[: full.index(stop)]
    streamed = ask(client, max_tokens=30, temperature=0, stop=stop, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == full[: full.index(stop)]


def test_same_seed_same_text_at_positive_temperature(client: openai.OpenAI) -> None:
    answers = [
        ask(client, max_tokens=16, temperature=1.0, seed=seed).choices[0].message.content
        for seed in (7, 7, 8, 9)
    ]
    assert answers[0] == answers[1]
    assert len(set(answers[1:])) > 1  # the seed really drives sampling


def test_style_changes_the_instruction_and_the_answer(client: openai.OpenAI) -> None:
    # A question whose three answers differ within 24 tokens in float32 and bfloat16 alike (to some
    # questions this small model words two styles alike at the start).
    question = [{"role": "user", "content": "Where is my parcel?"}]
    answers = {
        style: ask(client, question, max_tokens=24, temperature=0, extra_body={"style": style})
        for style in ("formal", "casual", "friendly")
    }
    assert len({a.usage.prompt_tokens for a in answers.values()}) == 3
    assert len({a.choices[0].message.content for a in answers.values()}) == 3


@pytest.mark.parametrize("stream", [False, True])
def test_terms_never_reach_the_client(client: openai.OpenAI, stream: bool) -> None:
    terms = {"you": "thou", "your": "thine", "password": "passphrase"}
    kwargs = {"max_tokens": 40, "temperature": 0, "extra_body": {"terms": terms}}
    if stream:
        chunks = list(ask(client, stream=True, **kwargs))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        rewrites = next(
            c.model_extra["terms_rewrites"] for c in chunks if c.choices and c.choices[0].finish_reason
        )
    else:
        response = ask(client, **kwargs)
        text, rewrites = response.choices[0].message.content, response.model_extra["terms_rewrites"]
    assert not re.search(r"\b(you|your|password)\b", text, re.IGNORECASE), text
    assert rewrites > 0
    assert re.search(r"\b(thou|thine|passphrase)\b", text, re.IGNORECASE)


@pytest.fixture(scope="module")
def small_window(serve: Callable[..., Server]) -> Server:
    """The same model with its context window cut to 200 tokens."""
    backend = HFBackend(partial(resolve_model_dir, None, Settings().cache_dir), context_window=200)
    return serve({MODEL: backend})


def test_history_is_trimmed_to_the_context_window(small_window: Server) -> None:
    client = small_window.openai()
    history = []
    for i in range(12):
        history += [
            {"role": "user", "content": f"Question {i}: where is my order number {1000 + i}?"},
            {"role": "assistant", "content": f"Your order {1000 + i} ships tomorrow."},
        ]
    history.append({"role": "user", "content": "Thanks, and my refund?"})
    response = ask(client, history, max_tokens=8, temperature=0)
    assert response.usage.prompt_tokens + 8 <= 200
    assert response.usage.prompt_tokens > 100  # the newest turns were kept, not everything dropped


def test_single_message_too_long_is_a_clear_400(small_window: Server) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        ask(small_window.openai(), [{"role": "user", "content": "refund " * 300}], max_tokens=8)
    error = caught.value.body
    assert error["code"] == "context_length_exceeded"
    assert "context window is 200 tokens" in error["message"]

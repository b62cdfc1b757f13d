"""Uploaded fine-tuning files: good ones pass with their stats, bad ones name the line and the problem.

The shipped benchmark dataset (``bench/finetune_data``) is checked here too, with the real tokenizer.
"""

from __future__ import annotations

import difflib
import json
import tomllib
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from finetune.files import FileStats, FileValidationError, read_chat_jsonl, validate_chat_jsonl

DATA_DIR = Path(__file__).resolve().parent.parent / "bench" / "finetune_data"

SYSTEM = {"role": "system", "content": "You are a support agent."}
USER = {"role": "user", "content": "Where is my order?"}
ASSISTANT = {"role": "assistant", "content": "It ships today."}


def count_words(messages: list[dict[str, str]]) -> int:
    return sum(len(message["content"].split()) for message in messages)


def example(*messages: dict[str, Any], **extra: Any) -> str:
    return json.dumps({"messages": list(messages), **extra}, ensure_ascii=False)


def good_lines(count: int = 10) -> list[str]:
    return [example(USER, ASSISTANT) for _ in range(count)]


def with_line(line: str, at: int = 3, count: int = 10) -> bytes:
    """A good file whose 1-based line ``at`` is ``line``."""
    lines = good_lines(count)
    lines[at - 1] = line
    return "\n".join(lines).encode() + b"\n"


def validate(data: bytes, context_window: int = 100, min_examples: int = 10) -> FileStats:
    return validate_chat_jsonl(
        data, count_tokens=count_words, context_window=context_window, min_examples=min_examples
    )


def test_a_good_file_passes_with_its_stats() -> None:
    lines = [
        example(SYSTEM, USER, ASSISTANT),  # 5 + 4 + 3 words
        example(USER, {"role": "assistant", "content": "one two three four five six", "weight": 1}),
        example(
            USER, {**ASSISTANT, "weight": 1}, {"role": "user", "content": "ok", "name": "ann"}, ASSISTANT
        ),
        *good_lines(7),
    ]
    data = ("\n".join(lines) + "\n\n").encode()  # trailing blank lines are fine
    assert validate(data) == FileStats(examples=10, tokens=12 + 10 + 11 + 7 * 7, max_tokens=12)


def test_a_distillation_prompt_file_ends_with_the_user() -> None:
    prompts = "\n".join(
        [example(SYSTEM, USER), example(USER, ASSISTANT, USER), *(example(USER) for _ in range(8))]
    ).encode()
    stats = validate_chat_jsonl(prompts, count_tokens=count_words, context_window=100, last_role="user")
    assert stats.examples == 10
    answered = "\n".join(good_lines()).encode()
    with pytest.raises(FileValidationError, match=r"line 1: the last message .* must be from the user"):
        validate_chat_jsonl(answered, count_tokens=count_words, context_window=100, last_role="user")


def test_crlf_line_endings_and_a_byte_order_mark_are_accepted() -> None:
    data = b"\xef\xbb\xbf" + "\r\n".join(good_lines()).encode()
    assert validate(data).examples == 10


def test_read_returns_the_messages_of_each_example(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    odd_breaks = {"role": "user", "content": "two\u2028lines\x85and\x0ca form feed"}  # not line ends
    path.write_bytes(with_line(example(SYSTEM, odd_breaks, {**ASSISTANT, "weight": 1})) + b"\n")
    assert validate(path.read_bytes()).examples == 10
    examples = read_chat_jsonl(path)
    assert len(examples) == 10
    assert examples[2] == [SYSTEM, odd_breaks, {**ASSISTANT, "weight": 1}]
    assert examples[0] == [USER, ASSISTANT]


BAD_LINE_CASES = [
    ("not json", "not valid JSON"),
    ('{"messages": [', "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"msgs": []}', "unknown key 'msgs'"),
    ("{}", "missing key 'messages'"),
    ('{"messages": "hi"}', "'messages' must be a list"),
    ('{"messages": []}', "'messages' is empty"),
    (example(USER, ASSISTANT, tools=[]), "key 'tools' is not supported"),
    (example(USER, ASSISTANT, parallel_tool_calls=False), "key 'parallel_tool_calls' is not supported"),
    ('{"messages": ["hi"]}', "message 1 is a string, not an object"),
    (example(USER, {"role": "bot", "content": "x"}), "message 2 has role 'bot'; roles are system, user"),
    (example(USER, {"role": "tool", "content": "x"}), "message 2 has role 'tool'"),
    (example({"content": "hi"}, ASSISTANT), "message 1 has no role"),
    (example(USER, {"role": "assistant"}), "message 2 has no 'content'"),
    (example(USER, {"role": "assistant", "content": None}), "message 2 has no 'content'"),
    (example(USER, {"role": "assistant", "content": [{"type": "text"}]}), "content that is a list"),
    (example(USER, {"role": "assistant", "content": "  "}), "message 2 has empty content"),
    (
        '{"messages": [{"role": "user", "content": "\\ud83d"}]}',
        "message 1 has content with an unpaired surrogate",
    ),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ('{"messages": ' + "9" * 5000 + "}", "a number too long"),
    (
        example(USER, {**ASSISTANT, "tool_calls": []}),
        "message 2 has key 'tool_calls', which is not supported",
    ),
    (example(USER, {**ASSISTANT, "mood": "happy"}), "message 2 has unknown key 'mood'"),
    (example(USER, {**ASSISTANT, "name": 3}), "message 2 has a 'name' that is not a non-empty string"),
    (example(USER, {**ASSISTANT, "weight": 2}), "message 2 has weight 2; weight must be 0 or 1"),
    (example(USER, {**ASSISTANT, "weight": True}), "message 2 has weight true"),
    (example({**USER, "weight": 1}, ASSISTANT), "only assistant messages take a weight"),
    (example(USER, {**ASSISTANT, "weight": 0}), "weight 0, which is not supported"),
    (example(USER, SYSTEM, ASSISTANT), "message 2 is a system message; only the first"),
    (example(SYSTEM, SYSTEM, USER, ASSISTANT), "message 2 is a system message"),
    (example(ASSISTANT), "message 1 is from the assistant but the user was expected"),
    (example(SYSTEM, ASSISTANT), "message 2 is from the assistant but the user was expected"),
    (example(USER, USER, ASSISTANT), "message 2 is from the user but the assistant was expected"),
    (example(USER, ASSISTANT, ASSISTANT), "message 3 is from the assistant but the user was expected"),
    (example(USER), "the last message (message 1) is from the user; it must be from the assistant"),
    (example(SYSTEM), "the last message (message 1) is from the system"),
    (example(USER, ASSISTANT, USER), "the last message (message 3) is from the user"),
    (example(USER, {"role": "assistant", "content": "word " * 200}), "has 204 tokens; the limit is 100"),
]


@pytest.mark.parametrize(("line", "expected"), BAD_LINE_CASES)
def test_a_bad_line_is_named_with_its_problem(line: str, expected: str) -> None:
    with pytest.raises(FileValidationError) as caught:
        validate(with_line(line, at=4))
    assert caught.value.line == 4
    assert caught.value.message.startswith("line 4: ")
    assert expected in caught.value.message
    assert str(caught.value) == caught.value.message


@pytest.mark.parametrize(
    ("data", "line", "expected"),
    [
        (b"", None, "the file is empty"),
        (b"\n \n\n", None, "the file is empty"),
        (
            with_line(example(USER, ASSISTANT), count=7),
            None,
            "the file has 7 examples; at least 10 are needed",
        ),
        (with_line("", at=5), 5, "blank line in the middle of the file"),
        (b"\n" + with_line(example(USER, ASSISTANT)), 1, "blank line in the middle of the file"),
        (with_line(example(USER, ASSISTANT)).replace(b"ships", b"sh\xffips"), 1, "invalid UTF-8 (byte 0xff)"),
    ],
)
def test_a_bad_file_is_named_with_its_problem(data: bytes, line: int | None, expected: str) -> None:
    with pytest.raises(FileValidationError) as caught:
        validate(data)
    assert caught.value.line == line
    assert expected in caught.value.message


def test_invalid_utf8_names_the_line_of_the_bad_bytes() -> None:
    lines = [line.encode() for line in good_lines()]
    lines[0] = example(USER, {"role": "assistant", "content": "Ça part aujourd'hui 🚚"}).encode()
    lines[5] = lines[5].replace(b"ships", b"sh\xe9ips")  # Latin-1 é
    with pytest.raises(FileValidationError) as caught:
        validate(b"\n".join(lines))
    assert caught.value.line == 6
    assert caught.value.message.startswith("line 6: invalid UTF-8 (byte 0xe9)")


def test_the_first_error_is_reported() -> None:
    lines = good_lines()
    lines[2], lines[6] = "oops", "[]"
    with pytest.raises(FileValidationError) as caught:
        validate("\n".join(lines).encode())
    assert caught.value.line == 3


def test_the_context_window_counts_the_messages_without_weights() -> None:
    seen: list[list[dict[str, str]]] = []

    def spy(messages: list[dict[str, str]]) -> int:
        seen.append(messages)
        return 1

    validate_chat_jsonl(
        with_line(example(USER, {**ASSISTANT, "weight": 1})), count_tokens=spy, context_window=1
    )
    assert seen[2] == [USER, ASSISTANT]


# -- with the default model's real tokenizer ---------------------------------------------------------


@cache
def chat_tokenizer() -> tuple[Callable[[list[dict[str, str]]], int], int]:
    """Token counting with the default model's chat template, and its context window."""
    from transformers import AutoConfig, AutoTokenizer

    from assistant.model_store import resolve_model_dir
    from assistant.settings import Settings

    settings = Settings()
    model_dir = resolve_model_dir(settings.model.path, settings.cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    window = int(AutoConfig.from_pretrained(model_dir).max_position_embeddings)

    def count(messages: list[dict[str, str]]) -> int:
        encoded: Any = tokenizer.apply_chat_template(messages, tokenize=True)
        # transformers 5 returns a BatchEncoding, 4.x a list of ids
        return len(encoded if isinstance(encoded, list) else encoded["input_ids"])

    return count, window


def test_the_real_tokenizer_counts_chat_template_tokens() -> None:
    count, window = chat_tokenizer()
    data = "\n".join([example(SYSTEM, USER, ASSISTANT), *good_lines(9)]).encode()
    stats = validate_chat_jsonl(data, count_tokens=count, context_window=window)
    one = count([USER, ASSISTANT])
    assert 10 < one < 60  # the template adds its default system prompt and role markers
    assert stats.examples == 10
    with_system = count([SYSTEM, USER, ASSISTANT])
    assert stats.tokens == with_system + 9 * one
    assert stats.max_tokens == max(with_system, one)
    too_small = min(with_system, one) - 1
    with pytest.raises(FileValidationError, match=rf"line 1: the example has {with_system} tokens"):
        validate_chat_jsonl(data, count_tokens=count, context_window=too_small)


# -- the fine-tuning benchmark's dataset ------------------------------------------------------------


def benchmark_facts() -> dict[str, list[str]]:
    with (DATA_DIR / "facts.toml").open("rb") as file:
        facts = tomllib.load(file)["fact"]
    assert len({fact["id"] for fact in facts}) == len(facts), "fact ids repeat"
    return {fact["id"]: fact["answers"] for fact in facts}


def test_the_benchmark_training_file_passes_with_the_real_tokenizer() -> None:
    count, window = chat_tokenizer()
    stats = validate_chat_jsonl(
        (DATA_DIR / "train.jsonl").read_bytes(), count_tokens=count, context_window=window
    )
    assert stats.examples >= 250
    assert stats.max_tokens < 256  # short support answers


def test_every_fact_is_taught_about_ten_times() -> None:
    examples = read_chat_jsonl(DATA_DIR / "train.jsonl")
    replies = [" ".join(m["content"] for m in messages if m["role"] == "assistant") for messages in examples]
    for fact, answers in benchmark_facts().items():
        taught = sum(any(answer in reply for answer in answers) for reply in replies)
        assert taught >= 10, f"{fact} is stated in only {taught} training answers"


def test_heldout_questions_name_known_facts_and_are_not_in_the_training_file() -> None:
    facts = benchmark_facts()
    train_text = (DATA_DIR / "train.jsonl").read_text(encoding="utf-8").lower()
    rows = [
        json.loads(line) for line in (DATA_DIR / "heldout.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    assert len(rows) >= 54
    for row in rows:
        assert row["fact"] in facts, row
        assert json.dumps(row["question"].lower(), ensure_ascii=False)[1:-1] not in train_text, row
    per_fact = {fact: sum(row["fact"] == fact for row in rows) for fact in facts}
    assert min(per_fact.values()) >= 2, per_fact


def test_heldout_questions_are_worded_differently_from_every_training_question() -> None:
    questions = [
        message["content"].lower()
        for messages in read_chat_jsonl(DATA_DIR / "train.jsonl")
        for message in messages
        if message["role"] == "user"
    ]
    for line in (DATA_DIR / "heldout.jsonl").read_text(encoding="utf-8").splitlines():
        heldout = json.loads(line)["question"].lower()
        matcher = difflib.SequenceMatcher(b=heldout)
        for question in questions:
            matcher.set_seq1(question)
            if matcher.real_quick_ratio() >= 0.7 and matcher.quick_ratio() >= 0.7:
                assert matcher.ratio() < 0.7, (heldout, question)

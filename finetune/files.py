"""Validation of uploaded fine-tuning files (chat JSONL, OpenAI's fine-tuning format).

A file is UTF-8 text with one JSON object per line::

    {"messages": [{"role": "system", "content": "..."}, {"role": "user", "content": "..."},
                  {"role": "assistant", "content": "..."}]}

The rules, checked in this order; the first broken one raises ``FileValidationError`` naming the
line (1-based; ``None`` for whole-file problems) and saying how to fix it:

1. The file is not empty and is valid UTF-8 (a leading byte-order mark is allowed).
2. Blank lines may only come at the end of the file; one in the middle is an error.
3. Each line is a JSON object whose only key is ``messages`` (``tools``, ``parallel_tool_calls`` and
   ``functions`` are OpenAI's, but tool calling is not supported here; any other key is an error too).
4. ``messages`` is a non-empty list; each message is an object with ``role`` (``system``, ``user`` or
   ``assistant``) and ``content`` (a string that is not blank), and otherwise only OpenAI's optional
   ``name`` (a string) and, on assistant messages, ``weight`` 1 (0 is not supported: every assistant
   message is trained on).
5. At most one system message, and only as the first message; after it, user and assistant messages
   alternate, starting with user; and the last message is from the assistant (from the user in a
   distillation prompt file, ``last_role="user"``: the teacher writes the answer).
6. ``count_tokens(messages)`` (``weight`` left out) is at most the context window.
7. The file has at least ``min_examples`` examples.

Raises: ``FileValidationError`` (from ``validate_chat_jsonl``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

#: Who speaks last: the assistant in a training file, the user in a distillation prompt file.
LastRole = Literal["assistant", "user"]
ROLES = ("system", "user", "assistant")
MESSAGE_KEYS = ("role", "content", "name", "weight")
#: OpenAI keys for tool calling: recognised so the error can say they are not supported.
TOOL_KEYS = frozenset({"tools", "parallel_tool_calls", "functions", "tool_calls", "function_call"})
UTF8_BOM = b"\xef\xbb\xbf"

#: A message as read from a validated file: ``role``, ``content`` and optional ``name`` are strings,
#: ``weight`` (assistant messages only) is 1.
ChatMessage = dict[str, Any]
CountTokens = Callable[[list[dict[str, str]]], int]


class FileValidationError(Exception):
    """An uploaded file breaks a rule; ``message`` names the line and says how to fix it."""

    def __init__(self, line: int | None, problem: str) -> None:
        self.line = line
        self.message = f"line {line}: {problem}" if line is not None else problem
        super().__init__(self.message)


@dataclass(frozen=True)
class FileStats:
    examples: int
    #: Total tokens over all examples, as ``count_tokens`` counts them.
    tokens: int
    #: Tokens of the longest example.
    max_tokens: int


def validate_chat_jsonl(
    data: bytes,
    *,
    count_tokens: CountTokens,
    context_window: int,
    min_examples: int = 10,
    last_role: LastRole = "assistant",
) -> FileStats:
    """Check every rule of the module docstring; the file's statistics when it passes."""
    lengths = [
        _check_length(number, messages, count_tokens, context_window)
        for number, messages in _examples(_decode(data), last_role)
    ]
    if len(lengths) < min_examples:
        raise FileValidationError(
            None, f"the file has {len(lengths)} examples; at least {min_examples} are needed"
        )
    return FileStats(examples=len(lengths), tokens=sum(lengths), max_tokens=max(lengths))


def read_chat_jsonl(path: Path) -> list[list[ChatMessage]]:
    """The examples of a file that ``validate_chat_jsonl`` accepted (no checks here)."""
    lines = path.read_text(encoding="utf-8-sig").split("\n")
    return [json.loads(line)["messages"] for line in lines if line.strip()]


def _decode(data: bytes) -> str:
    data = data.removeprefix(UTF8_BOM)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise FileValidationError(
            line, f"invalid UTF-8 (byte 0x{data[error.start]:02x}); save the file as UTF-8"
        ) from None
    if not text.strip():
        raise FileValidationError(
            None, 'the file is empty; it needs one {"messages": [...]} JSON object per line'
        )
    return text


def _examples(text: str, last_role: LastRole) -> Iterator[tuple[int, list[ChatMessage]]]:
    """(line number, checked messages) per example; blank lines only at the end."""
    # split("\n"), not splitlines(): JSON strings may hold raw U+2028 and other line breaks.
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    last = max(index for index, line in enumerate(lines) if line.strip())
    for index, line in enumerate(lines[: last + 1]):
        number = index + 1
        if not line.strip():
            raise FileValidationError(
                number, "blank line in the middle of the file; remove it (only the end may be blank)"
            )
        messages = _messages(number, _parse_object(number, line))
        _check_messages(number, messages, last_role)
        yield number, messages


def _parse_object(number: int, line: str) -> dict[str, Any]:
    try:
        value = json.loads(line)
    except json.JSONDecodeError as error:
        raise FileValidationError(
            number,
            f"not valid JSON ({error.msg} at column {error.colno}); each line must be one complete "
            'JSON object such as {"messages": [...]}',
        ) from None
    except (ValueError, RecursionError):  # a number of thousands of digits, nesting thousands deep
        raise FileValidationError(
            number, "the JSON is nested too deeply or has a number too long to read"
        ) from None
    if not isinstance(value, dict):
        raise FileValidationError(
            number, f'expected a JSON object {{"messages": [...]}}, got {_json_type(value)}'
        )
    return value


def _messages(number: int, example: dict[str, Any]) -> list[ChatMessage]:
    for key in example:
        if key in TOOL_KEYS:
            raise FileValidationError(number, f"key '{key}' is not supported (no tool calling); remove it")
        if key != "messages":
            raise FileValidationError(number, f"unknown key '{key}'; the only key allowed is 'messages'")
    if "messages" not in example:
        raise FileValidationError(number, "missing key 'messages'")
    messages = example["messages"]
    if not isinstance(messages, list):
        raise FileValidationError(
            number, f"'messages' must be a list of message objects, got {_json_type(messages)}"
        )
    if not messages:
        raise FileValidationError(
            number, "'messages' is empty; an example needs a user and an assistant turn"
        )
    return messages


def _check_messages(number: int, messages: list[ChatMessage], last_role: LastRole) -> None:
    first_turn = 2 if isinstance(messages[0], dict) and messages[0].get("role") == "system" else 1
    for position, message in enumerate(messages, start=1):
        problem = _message_problem(message) or _order_problem(position, message["role"], first_turn)
        if problem:
            raise FileValidationError(number, f"message {position} {problem}")
    last = messages[-1]["role"]
    if last != last_role:
        raise FileValidationError(
            number,
            f"the last message (message {len(messages)}) is from the {last}; it must be from the {last_role}",
        )


def _message_problem(message: object) -> str | None:
    """What is wrong with one message on its own, phrased to follow "message N"."""
    if not isinstance(message, dict):
        return f"is {_json_type(message)}, not an object with 'role' and 'content'"
    for key in message:
        if key in TOOL_KEYS:
            return f"has key '{key}', which is not supported (no tool calling); remove it"
        if key not in MESSAGE_KEYS:
            return f"has unknown key '{key}'; allowed keys are {', '.join(MESSAGE_KEYS)}"
    role, content = message.get("role"), message.get("content")
    if role not in ROLES:
        shown = "no role" if role is None else f"role {_show(role)}"
        return f"has {shown}; roles are {', '.join(ROLES)}"
    if not isinstance(content, str):
        shown = "no 'content'" if content is None else f"content that is {_json_type(content)}"
        return f"has {shown}; 'content' must be a non-empty string"
    if not content.strip():
        return "has empty content"
    if not _is_unicode(content):
        return "has content with an unpaired surrogate escape such as \\ud800; fix the text's encoding"
    return _optional_fields_problem(message)


def _optional_fields_problem(message: dict[str, Any]) -> str | None:
    if "name" in message and not (isinstance(message["name"], str) and message["name"].strip()):
        return "has a 'name' that is not a non-empty string"
    if "weight" not in message:
        return None
    if message["role"] != "assistant":
        return f"is a {message['role']} message with 'weight'; only assistant messages take a weight"
    weight = message["weight"]
    if type(weight) is not int or weight not in (0, 1):
        return f"has weight {_show(weight)}; weight must be 0 or 1"
    if weight == 0:
        return "has weight 0, which is not supported: every assistant message is trained on; remove it"
    return None


def _order_problem(position: int, role: str, first_turn: int) -> str | None:
    """Whether ``role`` may stand at 1-based ``position``; ``first_turn`` is the first non-system one."""
    if role == "system":
        return None if position == 1 else "is a system message; only the first message may be one"
    expected = "user" if (position - first_turn) % 2 == 0 else "assistant"
    if role == expected:
        return None
    return (
        f"is from the {role} but the {expected} was expected; after the optional system message, "
        "user and assistant messages alternate, starting with user"
    )


def _check_length(
    number: int, messages: list[ChatMessage], count_tokens: CountTokens, context_window: int
) -> int:
    tokens = count_tokens([{k: v for k, v in m.items() if k != "weight"} for m in messages])
    if tokens > context_window:
        raise FileValidationError(
            number,
            f"the example has {tokens} tokens; the limit is {context_window} (the model's context "
            "window); shorten it or split it into several examples",
        )
    return tokens


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _show(value: object) -> str:
    """A JSON value as the user wrote it, strings in single quotes as the messages quote names."""
    return f"'{value}'" if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")

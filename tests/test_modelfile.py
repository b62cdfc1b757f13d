"""Modelfiles: the checked-in one is current, and TEMPLATE builds exactly the model's own prompts.

TEMPLATE is rendered with Go's ``text/template`` (the engine Ollama uses), by a small Go program built
here (the test command installs Debian's ``golang-go`` when ``go`` is missing).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy.orm import Session
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from assistant.cli import main
from assistant.db import migrate, sync_engine
from assistant.model_store import resolve_model_dir
from assistant.ollama_export import service_modelfile
from assistant.settings import Settings
from finetune.modelfile import ModelfileError, chatml_default_system
from finetune.models import TrainedModelRow

ROOT = Path(__file__).resolve().parent.parent
RENDERER = Path(__file__).parent / "ollama_template" / "render.go"

CONVERSATIONS = [
    [{"role": "user", "content": "Where is my order?"}],
    [
        {"role": "system", "content": "You are the support assistant of Kestrelmoor Outfitters."},
        {"role": "user", "content": "Hi! How long do I have to return boots?"},
        {"role": "assistant", "content": "You can return unused items within 45 days."},
        {"role": "user", "content": "And the refund?"},
        {"role": "assistant", "content": "Refunds go out within 5 business days.\nAnything else?"},
        {"role": "user", "content": "退货运费是多少？  {{ not a template }}  "},  # noqa: RUF001
    ],
    [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "second"},
        {"role": "user", "content": ""},
    ],
]


@pytest.fixture(scope="module")
def go_render(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("go") is None:
        if os.environ.get("CI"):
            pytest.fail("go is missing: the test command installs golang-go (scripts/with-services.sh)")
        pytest.skip("go is not installed (`make test` installs it)")
    work = tmp_path_factory.mktemp("go")
    env = {**os.environ, "GOCACHE": str(work / "cache"), "GOPATH": str(work / "path"), "GOFLAGS": ""}
    subprocess.run(["go", "build", "-o", str(work / "render"), str(RENDERER)], check=True, env=env)
    return work / "render"


def render(go_render: Path, template: str, messages: list[dict[str, str]]) -> str:
    data = json.dumps({"template": template, "messages": messages})
    return subprocess.run([str(go_render)], input=data, capture_output=True, text=True, check=True).stdout


def template_of(modelfile: str) -> str:
    found = re.search(r'^TEMPLATE """(.*?)"""$', modelfile, re.MULTILINE | re.DOTALL)
    assert found, modelfile
    return found.group(1)


def system_of(modelfile: str) -> str:
    found = re.search(r'^SYSTEM """(.*?)"""$', modelfile, re.MULTILINE | re.DOTALL)
    assert found, modelfile
    return found.group(1)


@pytest.fixture(scope="module")
def model_dir() -> str:
    return resolve_model_dir(None, Settings().cache_dir)


@pytest.fixture(scope="module")
def tokenizer(model_dir: str) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(model_dir)


def hf_prompt(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]]) -> str:
    return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))


def test_the_checked_in_modelfile_is_current() -> None:
    assert (ROOT / "Modelfile").read_text() == service_modelfile(Settings()), (
        "the Modelfile is stale: run `assistant modelfile`"
    )


def test_the_modelfile_names_what_ollama_needs() -> None:
    text = (ROOT / "Modelfile").read_text()
    assert "FROM ./models/SmolLM2-135M-Instruct.Q4_1.gguf" in text
    assert 'PARAMETER stop "<|im_end|>"' in text
    assert "PARAMETER temperature 0.3" in text
    assert re.search(r"^PARAMETER num_ctx \d+$", text, re.MULTILINE)
    assert "customer-service assistant" in system_of(text)


@pytest.mark.parametrize("conversation", CONVERSATIONS, ids=["one-turn", "system-and-turns", "empty-last"])
def test_template_builds_the_prompt_of_the_models_chat_template(
    go_render: Path, tokenizer: PreTrainedTokenizerBase, conversation: list[dict[str, str]]
) -> None:
    template = template_of((ROOT / "Modelfile").read_text())
    assert render(go_render, template, conversation) == hf_prompt(tokenizer, conversation)


def test_with_the_modelfiles_system_prompt_as_ollama_inserts_it(
    go_render: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    """Ollama puts SYSTEM first in ``.Messages`` when a request brings no system message."""
    text = (ROOT / "Modelfile").read_text()
    conversation = [{"role": "system", "content": system_of(text)}, *CONVERSATIONS[0]]
    assert render(go_render, template_of(text), conversation) == hf_prompt(tokenizer, conversation)


def test_a_template_that_is_not_chatml_is_refused(tokenizer: PreTrainedTokenizerBase) -> None:
    other = AutoTokenizer.from_pretrained(tokenizer.name_or_path)
    other.chat_template = (
        "{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
        "{{ m['content'] }}<|eot_id|>{% endfor %}"
    )
    with pytest.raises(ModelfileError, match="not ChatML"):
        chatml_default_system(other)


def test_modelfile_command_writes_the_file(tmp_path: Path) -> None:
    target = tmp_path / "Modelfile"
    result = CliRunner().invoke(main, ["modelfile", "--output", str(target)])
    assert result.exit_code == 0, result.output
    assert target.read_text() == (ROOT / "Modelfile").read_text()
    assert "ollama create assistant" in result.output


def test_export_ollama_writes_safetensors_and_a_modelfile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model_dir: str, go_render: Path
) -> None:
    """A trained-model row pointing at a real model directory, exported as a job's result would be."""
    monkeypatch.setenv("ASSISTANT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    settings = Settings()
    migrate(settings.database_url)
    name = "ft:smollm2-135m-instruct:kestrel:ftjob-abc"
    with Session(sync_engine(settings.database_url)) as session:
        session.add(
            TrainedModelRow(
                id=name,
                job_id="ftjob-abc",
                base_model="smollm2-135m-instruct",
                path=model_dir,
                adapter_path="",
            )
        )
        session.commit()

    result = CliRunner().invoke(main, ["export", "ollama", name])
    assert result.exit_code == 0, result.output
    folder = tmp_path / "exports" / "ft-smollm2-135m-instruct-kestrel-ftjob-abc"
    text = (folder / "Modelfile").read_text()
    assert "FROM ./model\n" in text
    assert (folder / "model" / "model.safetensors").is_file() and (
        folder / "model" / "tokenizer.json"
    ).is_file()
    assert template_of(text) == template_of((ROOT / "Modelfile").read_text())
    exported = AutoTokenizer.from_pretrained(folder / "model")
    for conversation in CONVERSATIONS:
        assert render(go_render, template_of(text), conversation) == hf_prompt(exported, conversation)

    again = CliRunner().invoke(main, ["export", "ollama", name])
    assert again.exit_code != 0 and "already exists" in again.output
    missing = CliRunner().invoke(main, ["export", "ollama", "ft:nope"])
    assert missing.exit_code != 0 and "no fine-tuned model named 'ft:nope'" in missing.output

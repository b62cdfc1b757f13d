"""The Files and Fine-tuning APIs without a worker: validation, clear errors, nothing half-created."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import openai
import pytest

from assistant.backends.hf import HFBackend
from tests.conftest import MODEL, Server
from tests.finetune_helpers import domain_examples, supervised


@pytest.fixture(scope="module")
def api(serve: Callable[..., Server], hf_backend: HFBackend) -> Server:
    return serve({MODEL: hf_backend}, finetune={"max_file_bytes": 200_000})


def upload(server: Server, data: bytes, purpose: str = "fine-tune") -> Any:
    return server.http().post(
        "/v1/files", files={"file": ("train.jsonl", data, "application/jsonl")}, data={"purpose": purpose}
    )


def stored(server: Server) -> tuple[list[str], list[str]]:
    listed = [f["id"] for f in server.http().get("/v1/files").json()["data"]]
    on_disk = (
        sorted(p.name for p in server.settings.files_dir.glob("*"))
        if server.settings.files_dir.exists()
        else []
    )
    return listed, on_disk


def test_a_file_round_trips_through_the_openai_client(api: Server) -> None:
    client = api.openai()
    data = domain_examples()
    created = client.files.create(file=("support.jsonl", data), purpose="fine-tune")
    assert (
        created.id.startswith("file-") and created.bytes == len(data) and created.filename == "support.jsonl"
    )
    assert client.files.retrieve(created.id).purpose == "fine-tune"
    assert created.id in [f.id for f in client.files.list()]
    assert client.files.content(created.id).content == data
    assert client.files.delete(created.id).deleted
    assert created.id not in stored(api)[0] and f"{created.id}.jsonl" not in stored(api)[1]
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(created.id)


def _lines(count: int = 12) -> list[str]:
    return domain_examples(count).decode().splitlines()


def _replace(line: int, text: str) -> bytes:
    lines = _lines()
    lines[line - 1] = text
    return ("\n".join(lines) + "\n").encode()


BAD_FILES = {
    "not json": (_replace(3, '{"messages": [oops'), "line 3"),
    "bad role": (
        _replace(
            5,
            json.dumps(
                {"messages": [{"role": "bot", "content": "hi"}, {"role": "assistant", "content": "x"}]}
            ),
        ),
        "line 5",
    ),
    "ends with user": (
        _replace(2, json.dumps({"messages": [{"role": "user", "content": "hi"}]})),
        "line 2",
    ),
    "too few examples": (("\n".join(_lines(7)) + "\n").encode(), "at least 10"),
    "not utf-8": (b"\xff\xfe" + domain_examples(), "line 1"),
    "empty": (b"", "empty"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_bad_file_is_refused_naming_the_problem_and_leaves_nothing(api: Server, case: str) -> None:
    data, expected = BAD_FILES[case]
    before = stored(api)
    response = upload(api, data)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert expected in error["message"] and error["param"] == "file" and error["code"] == "invalid_file"
    assert stored(api) == before


def test_an_example_longer_than_the_context_window_is_refused(api: Server) -> None:
    long = json.dumps(
        {"messages": [{"role": "user", "content": "refund " * 9000}, {"role": "assistant", "content": "ok"}]}
    )
    response = upload(api, _replace(6, long))
    assert response.status_code == 400 and "line 6" in response.json()["error"]["message"]


def test_upload_form_problems_are_400_and_a_huge_file_is_413(api: Server) -> None:
    assert upload(api, domain_examples(), purpose="assistants").json()["error"]["param"] == "purpose"
    missing = api.http().post("/v1/files", data={"purpose": "fine-tune"}, files={"other": ("x", b"{}")})
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "file"
    huge = upload(api, domain_examples() * 80)
    assert huge.status_code == 413, huge.text


@pytest.fixture(scope="module")
def training_file(api: Server) -> str:
    response = upload(api, domain_examples())
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"method": supervised(n_epochs=0)}, "method.supervised.hyperparameters.n_epochs"),
        ({"method": supervised(lora_dropout=1.5)}, "method.supervised.hyperparameters.lora_dropout"),
        ({"method": supervised(quantization="int3")}, "method.supervised.hyperparameters.quantization"),
        ({"method": supervised(warmup=3)}, "method.supervised.hyperparameters.warmup"),
        ({"method": {"type": "reinforcement"}}, "method.type"),
        ({"temperature": 1}, "temperature"),
        ({"model": "gpt-4o"}, "model"),
        ({"training_file": "file-missing"}, "training_file"),
        ({"validation_file": "file-missing"}, "validation_file"),
        ({"suffix": "Has Spaces"}, "suffix"),
    ],
)
def test_bad_job_requests_are_400_naming_the_field_and_create_nothing(
    api: Server, training_file: str, change: dict[str, Any], param: str
) -> None:
    http = api.http()
    before = http.get("/v1/fine_tuning/jobs").json()["data"]
    body = {"model": MODEL, "training_file": training_file, "method": supervised(), **change}
    response = http.post("/v1/fine_tuning/jobs", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
    assert http.get("/v1/fine_tuning/jobs").json()["data"] == before


def test_a_queued_job_can_be_cancelled_once_and_its_file_is_kept_until_then(
    api: Server, training_file: str
) -> None:
    client = api.openai()
    job = client.fine_tuning.jobs.create(
        model=MODEL,
        training_file=training_file,
        suffix="queued",
        method=supervised(),  # type: ignore[arg-type]
    )
    assert job.status == "queued" and job.hyperparameters.n_epochs == 1
    in_use = api.http().delete(f"/v1/files/{training_file}")
    assert in_use.status_code == 400 and job.id in in_use.json()["error"]["message"]
    assert client.fine_tuning.jobs.cancel(job.id).status == "cancelled"
    with pytest.raises(openai.BadRequestError, match="already cancelled"):
        client.fine_tuning.jobs.cancel(job.id)
    listed = client.fine_tuning.jobs.list(limit=50)
    assert job.id in [j.id for j in listed.data]
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id)]
    assert any("cancelled" in m for m in messages)
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.retrieve("ftjob-nope")


def test_chat_keys_cannot_use_the_admin_apis(api: Server, training_file: str) -> None:
    key = api.http().post("/v1/admin/keys", json={"name": "agent-ft"}).json()["key"]
    http = api.http(key)
    assert http.get("/v1/files").status_code == 403
    assert upload_with(http, domain_examples()).status_code == 403
    assert http.get("/v1/fine_tuning/jobs").status_code == 403
    assert (
        http.post("/v1/fine_tuning/jobs", json={"model": MODEL, "training_file": training_file}).status_code
        == 403
    )
    assert http.delete("/v1/models/ft:x").status_code == 403


def upload_with(http: Any, data: bytes) -> Any:
    return http.post("/v1/files", files={"file": ("t.jsonl", data)}, data={"purpose": "fine-tune"})


def _prompts(count: int = 12) -> bytes:
    """Conversations without their final answer: what a teacher answers in a distillation job."""
    lines = [json.loads(line) for line in _lines(count)]
    return "\n".join(json.dumps({"messages": e["messages"][:-1]}) for e in lines).encode()


def test_distillation_prompt_files_end_with_the_user(api: Server, training_file: str) -> None:
    client = api.openai()
    prompts = client.files.create(file=("prompts.jsonl", _prompts()), purpose="distillation")  # type: ignore[arg-type]
    assert client.files.retrieve(prompts.id).purpose == "distillation"
    refused = upload(api, domain_examples(), purpose="distillation")  # answers included: not prompts
    assert refused.status_code == 400
    assert "invalid distillation file: line 1:" in refused.json()["error"]["message"]
    assert "it must be from the user" in refused.json()["error"]["message"]
    training = upload(api, _prompts(), purpose="fine-tune")  # prompts are no training data
    assert (
        training.status_code == 400 and "it must be from the assistant" in training.json()["error"]["message"]
    )
    job = api.http().post(
        "/v1/fine_tuning/jobs", json={"model": MODEL, "training_file": prompts.id, "method": supervised()}
    )
    assert job.status_code == 400 and "has purpose 'distillation', not 'fine-tune'" in job.text

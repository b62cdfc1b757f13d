"""Black-box distillation jobs end to end: the official ``openai`` client submits, a real Celery worker
asks a real teacher (this service's default model over its OpenAI API, served by a second instance that
counts its generations), then trains the student (the default model) a few steps; the student answers.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer

from assistant.backends.hf import HFBackend
from assistant.model_store import resolve_model_dir
from finetune.teacher_phase import PROGRESS_FILE
from tests.conftest import MODEL, Server, _free_port
from tests.finetune_helpers import DOMAIN_FILE, QUICK, Worker, events, finished, wait_for
from tests.scripted import SpyBackend

PROMPT_COUNT = 12


def prompt_file(count: int = PROMPT_COUNT) -> bytes:
    """The domain conversations without their final answer: what the teacher is asked."""
    lines = DOMAIN_FILE.read_text().splitlines()[:count]
    return "\n".join(json.dumps({"messages": json.loads(line)["messages"][:-1]}) for line in lines).encode()


@pytest.fixture(scope="module")
def teacher(serve: Callable[..., Server], hf_backend: HFBackend) -> tuple[Server, SpyBackend]:
    spy = SpyBackend(hf_backend)
    return serve({MODEL: spy}), spy


@pytest.fixture(scope="module")
def stack(
    serve: Callable[..., Server], hf_backend: HFBackend, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, Worker]]:
    server = serve({MODEL: hf_backend})
    worker = Worker(server.settings, tmp_path_factory.mktemp("worker") / "worker.log").start()
    yield server, worker
    worker.stop()


def distillation(teacher_url: str, key: str | None, **generation: Any) -> dict[str, Any]:
    return {
        "type": "distillation",
        "distillation": {
            "teacher": {"kind": "openai", "base_url": f"{teacher_url}/v1", "model": MODEL, "api_key": key},
            "generation": {"temperature": 0.7, "max_tokens": 160, "concurrency": 2, **generation},
            "hyperparameters": QUICK,
        },
    }


def submit(server: Server, method: dict[str, Any]) -> Any:
    client = server.openai()
    prompts = client.files.create(file=("prompts.jsonl", prompt_file()), purpose="distillation")  # type: ignore[arg-type]
    return client.fine_tuning.jobs.create(
        model=MODEL,
        training_file=prompts.id,
        suffix="student",
        seed=3,
        method=method,  # type: ignore[arg-type]
    )


def test_a_black_box_job_distils_the_teacher_into_a_servable_student(
    stack: tuple[Server, Worker], teacher: tuple[Server, SpyBackend]
) -> None:
    server, worker = stack
    client, http = server.openai(), server.http()
    before = teacher[1].calls
    job = submit(server, distillation(teacher[0].url, teacher[0].admin_key))
    assert job.method.type == "distillation"  # type: ignore[union-attr]
    assert teacher[0].admin_key not in json.dumps(http.get(f"/v1/fine_tuning/jobs/{job.id}").json())

    done = wait_for(http, job.id, finished, worker)
    assert done["status"] == "succeeded", (done, worker.output())
    assert teacher[1].calls - before == PROMPT_COUNT  # every prompt asked once

    messages = [e["message"] for e in events(http, job.id)]
    assert any(m.startswith("Phase 1: 12/12 answered") for m in messages), messages
    assert any(m.startswith("Step ") for m in messages)  # phase 2's training metrics

    dataset_id, modelfile_id = done["result_files"]
    dataset = client.files.content(dataset_id).text.splitlines()
    assert 1 <= len(dataset) <= PROMPT_COUNT
    for line in dataset:
        conversation = json.loads(line)["messages"]
        assert conversation[-1]["role"] == "assistant" and conversation[-1]["content"].strip()
    assert client.files.retrieve(modelfile_id).purpose == "fine-tune-results"

    answer = client.chat.completions.create(
        model=done["fine_tuned_model"],
        messages=[{"role": "user", "content": "How long do I have to return an item?"}],
        max_tokens=16,
        temperature=0,
    )
    assert answer.choices[0].message.content


def test_an_unreachable_teacher_fails_the_job_with_a_clear_error(stack: tuple[Server, Worker]) -> None:
    server, worker = stack
    nowhere = f"http://127.0.0.1:{_free_port()}"
    job = submit(server, distillation(nowhere, None, max_retries=1))
    done = wait_for(server.http(), job.id, finished, worker)
    assert done["status"] == "failed"
    assert done["error"]["code"] == "teacher_error"
    assert "failed 2 times in a row" in done["error"]["message"]


def test_a_worker_killed_in_phase_1_resumes_without_asking_again(
    stack: tuple[Server, Worker], teacher: tuple[Server, SpyBackend]
) -> None:
    server, worker = stack
    http = server.http()
    before = teacher[1].calls
    job = submit(server, distillation(teacher[0].url, teacher[0].admin_key, concurrency=1))
    progress = server.settings.jobs_dir / job.id / PROGRESS_FILE
    deadline = time.monotonic() + 600
    while (
        not progress.exists() or len(progress.read_text().splitlines()) < 3
    ) and time.monotonic() < deadline:
        time.sleep(0.2)
    worker.kill()
    answered = len(progress.read_text().splitlines())
    assert 3 <= answered < PROMPT_COUNT
    worker.start()  # the restarted worker finds the job lost and resumes it

    done = wait_for(http, job.id, finished, worker)
    assert done["status"] == "succeeded", (done, worker.output())
    # At most the one prompt in flight when the worker died is asked twice.
    assert PROMPT_COUNT <= teacher[1].calls - before <= PROMPT_COUNT + 1


def test_a_logits_job_distils_a_local_teacher_the_service_serves(stack: tuple[Server, Worker]) -> None:
    server, worker = stack
    client, http = server.openai(), server.http()
    method = {
        "type": "distillation",
        "distillation": {
            "mode": "logits",
            "teacher": {"kind": "local", "model": MODEL},  # this service's own model, loaded in the worker
            "generation": {"temperature": 0.7, "max_tokens": 96},
            "loss": {"ce_weight": 0.5, "temperature": 2.0},
            "hyperparameters": QUICK,
        },
    }
    job = submit(server, method)
    shown = http.get(f"/v1/fine_tuning/jobs/{job.id}").json()["method"]["distillation"]
    assert shown["mode"] == "logits" and shown["loss"] == {"ce_weight": 0.5, "temperature": 2.0}
    assert shown["teacher"] == {
        "kind": "local",
        "base_url": None,
        "model": MODEL,
        "api_key": None,
        "timeout": 120.0,
    }

    done = wait_for(http, job.id, finished, worker)
    assert done["status"] == "succeeded", (done, worker.output())
    found = events(http, job.id)
    messages = [e["message"] for e in found]
    assert any(m.startswith(f"Phase 1: teacher '{MODEL}' at this worker") for m in messages), messages
    assert any(m.startswith("white-box distillation (logits)") for m in messages), messages
    steps = [e["data"] for e in found if "kd_loss" in e["data"]]
    assert steps and all(step["kd_loss"] >= 0 and step["ce_loss"] > 0 for step in steps)
    answer = client.chat.completions.create(
        model=done["fine_tuned_model"],
        messages=[{"role": "user", "content": "How long do I have to return an item?"}],
        max_tokens=16,
        temperature=0,
    )
    assert answer.choices[0].message.content


def test_a_local_teacher_with_another_vocabulary_is_refused_at_submission(
    stack: tuple[Server, Worker], tmp_path: Path
) -> None:
    server, _ = stack
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_dir(None, server.settings.cache_dir))
    tokenizer.add_tokens(["<order-number>"])
    tokenizer.save_pretrained(tmp_path)
    prompts = server.openai().files.create(file=("prompts.jsonl", prompt_file()), purpose="distillation")  # type: ignore[arg-type]
    before = server.http().get("/v1/fine_tuning/jobs").json()["data"]
    for mode, model, code, says in (
        ("on_policy", str(tmp_path), "vocabulary_mismatch", "need a shared tokenizer"),
        ("black_box", str(tmp_path / "missing"), "teacher_not_found", "cannot load the local teacher"),
    ):
        method = {
            "type": "distillation",
            "distillation": {"mode": mode, "teacher": {"kind": "local", "model": model}},
        }
        response = server.http().post(
            "/v1/fine_tuning/jobs", json={"model": MODEL, "training_file": prompts.id, "method": method}
        )
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == code and error["param"] == "method.distillation.teacher.model"
        assert says in error["message"]
    assert server.http().get("/v1/fine_tuning/jobs").json()["data"] == before  # no job was created


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"mode": "logits"}, "only 'black_box' is offered"),
        (
            {"mode": "on_policy", "teacher": {"kind": "ollama", "base_url": "http://x", "model": "m"}},
            "black_box",
        ),
        ({"teacher": {"kind": "openai", "model": "m"}}, "needs its base_url"),
        ({"teacher": {"kind": "openai", "base_url": "http://x/v1"}}, "model"),
        ({"generation": {"samples_per_prompt": 0}}, "samples_per_prompt"),
    ],
)
def test_bad_distillation_requests_are_400(
    stack: tuple[Server, Worker], change: dict[str, Any], message: str
) -> None:
    server, _ = stack
    method = distillation("http://127.0.0.1:1", "sk-x")
    method["distillation"] |= change
    client = server.openai()
    prompts = client.files.create(file=("prompts.jsonl", prompt_file()), purpose="distillation")  # type: ignore[arg-type]
    response = server.http().post(
        "/v1/fine_tuning/jobs", json={"model": MODEL, "training_file": prompts.id, "method": method}
    )
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]["message"]
    assert response.json()["error"]["param"].startswith("method.distillation")

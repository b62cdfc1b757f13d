"""Every error status in OpenAI's envelope, from the real app on the real model."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import openai
import pytest

from assistant.backends.hf import HFBackend
from tests.conftest import MODEL, Server

BODY = {"model": MODEL, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 4}
LONG_ANSWER = {
    "model": MODEL,
    "messages": [{"role": "user", "content": "Tell me a long story about a lost parcel."}],
    "temperature": 0,
}


def assert_envelope(response: httpx.Response, status: int, param: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if param is not None:
        assert error["param"] == param
    return dict(error)


def test_n_other_than_one_is_400(server: Server) -> None:
    error = assert_envelope(server.http().post("/v1/chat/completions", json={**BODY, "n": 2}), 400, "n")
    assert "n=1" in error["message"]


def test_openai_client_raises_the_matching_errors(client: openai.OpenAI, server: Server) -> None:
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=BODY["messages"], n=3)  # type: ignore[arg-type]
    with pytest.raises(openai.NotFoundError, match="not served here"):
        client.chat.completions.create(model="gpt-4o", messages=BODY["messages"])  # type: ignore[arg-type]
    with pytest.raises(openai.UnprocessableEntityError):
        client.chat.completions.create(model=MODEL, messages=BODY["messages"], temperature=5)  # type: ignore[arg-type]
    with pytest.raises(openai.AuthenticationError):
        server.openai(key="sk-wrong").models.list()


def test_invalid_json_is_400(server: Server) -> None:
    response = server.http().post(
        "/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert assert_envelope(response, 400)["code"] == "invalid_json"


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"temperature": 2.5}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "messages.0.role"),
        ({"style": "sarcastic"}, "style"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"frobnicate": True}, "frobnicate"),
    ],
)
def test_schema_violations_are_422_naming_the_field(
    server: Server, change: dict[str, Any], param: str
) -> None:
    response = server.http().post("/v1/chat/completions", json={**BODY, **change})
    error = assert_envelope(response, 422)
    assert error["param"] is not None and error["param"].startswith(param.split(".")[0]), error


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"max_tokens": 100_000}, "max_tokens"),
        ({"terms": {"!!!": "x"}}, "terms"),
        ({"terms": {f"w{i}": "x" for i in range(101)}}, "terms"),
        (
            {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]},
            "messages",
        ),
    ],
)
def test_semantic_errors_are_400_naming_the_field(server: Server, change: dict[str, Any], param: str) -> None:
    assert_envelope(server.http().post("/v1/chat/completions", json={**BODY, **change}), 400, param)


def test_unknown_model_is_404(server: Server) -> None:
    response = server.http().post("/v1/chat/completions", json={**BODY, "model": "nope"})
    assert assert_envelope(response, 404, "model")["code"] == "model_not_found"


def test_unknown_route_is_a_json_404(server: Server) -> None:
    assert_envelope(server.http().get("/v1/nothing-here"), 404)


def test_body_too_large_is_413(server: Server) -> None:
    huge = {
        **BODY,
        "messages": [{"role": "user", "content": "x" * (server.settings.server.max_body_bytes + 10)}],
    }
    assert_envelope(
        server.http().post(
            "/v1/chat/completions", content=json.dumps(huge), headers={"content-type": "application/json"}
        ),
        413,
    )


def test_missing_and_bad_keys_are_401(server: Server) -> None:
    assert_envelope(httpx.get(f"{server.url}/v1/models"), 401)
    assert_envelope(httpx.get(f"{server.url}/v1/models", headers={"Authorization": "Bearer sk-nope"}), 401)
    assert_envelope(httpx.get(f"{server.url}/v1/models", headers={"Authorization": "Basic abc"}), 401)


def test_chat_key_on_admin_route_is_403(server: Server, chat_key: str) -> None:
    assert_envelope(server.http(chat_key).get("/v1/admin/keys"), 403)
    assert server.http(chat_key).post("/v1/chat/completions", json=BODY).status_code == 200


def test_revoked_key_is_401(server: Server) -> None:
    admin = server.http()
    key = admin.post("/v1/admin/keys", json={"name": "short-lived"}).json()["key"]
    assert server.http(key).get("/v1/models").status_code == 200
    assert admin.delete("/v1/admin/keys/short-lived").status_code == 204
    assert_envelope(server.http(key).get("/v1/models"), 401)


def test_full_queue_is_429_with_retry_after(serve: Callable[..., Server], hf_backend: HFBackend) -> None:
    busy = HFBackend(lambda: hf_backend._model_source(), max_batch=1, max_queued=1)
    server = serve({MODEL: busy})
    streaming = {**LONG_ANSWER, "max_tokens": 256, "stream": True}
    with (
        server.http().stream("POST", "/v1/chat/completions", json=streaming) as running,
        ThreadPoolExecutor(1) as pool,
    ):
        lines = running.iter_lines()
        next(lines)  # the first request is generating: the batch (of 1) is full

        second = pool.submit(server.http().post, "/v1/chat/completions", json={**BODY, "max_tokens": 2})
        deadline = time.monotonic() + 30
        while (stats := busy.batch_stats()) is None or stats.waiting < 1:  # it waits: the queue is full
            assert time.monotonic() < deadline
            time.sleep(0.2)
        response = server.http().post("/v1/chat/completions", json=BODY)
        assert assert_envelope(response, 429)["code"] == "overloaded"
        assert int(response.headers["retry-after"]) >= 1
        assert 'assistant_rejections_total{reason="overloaded"} 1.0' in server.http().get("/metrics").text
    assert second.result().status_code == 200  # the waiting one was served once the first was done


class GatedBackend(HFBackend):
    """The real backend, whose loading waits until the test opens the gate."""

    gate: asyncio.Event | None = None

    async def start(self) -> None:
        self.gate = asyncio.Event()
        await self.gate.wait()
        await super().start()


def test_not_ready_is_503_then_ready(serve: Callable[..., Server], hf_backend: HFBackend) -> None:
    backend = GatedBackend(lambda: hf_backend._model_source())
    server = serve({MODEL: backend}, wait_ready=False)
    response = server.http().post("/v1/chat/completions", json=BODY)
    assert assert_envelope(response, 503)["code"] == "model_not_ready"
    assert response.headers["retry-after"]
    readyz = httpx.get(f"{server.url}/readyz")
    assert readyz.status_code == 503 and readyz.json()["models"][MODEL] == "the model is loading"
    assert httpx.get(f"{server.url}/healthz").status_code == 200

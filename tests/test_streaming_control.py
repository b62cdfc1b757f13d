"""Generation runs off the event loop, and a client that disconnects stops its generation."""

from __future__ import annotations

import time

from assistant.backends.hf import HFBackend
from tests.conftest import MODEL, Server

LONG = {
    "model": MODEL,
    "messages": [{"role": "user", "content": "Tell me a long story about a lost parcel."}],
    "max_tokens": 200,
    "temperature": 0,
    "stream": True,
}


def test_healthz_answers_while_a_generation_runs(server: Server) -> None:
    http = server.http()
    with http.stream("POST", "/v1/chat/completions", json=LONG) as stream:
        lines = stream.iter_lines()
        next(lines)
        assert http.get("/healthz", timeout=5).json() == {"status": "ok"}
        assert http.get("/v1/models", timeout=5).status_code == 200
        rest = [line for line in lines if line.startswith("data: ")]
    assert rest[-1] == "data: [DONE]" and len(rest) > 20  # the generation went on after the probes


def test_disconnect_stops_generation(server: Server, hf_backend: HFBackend) -> None:
    http = server.http()
    with http.stream("POST", "/v1/chat/completions", json=LONG) as stream:
        lines = stream.iter_lines()
        for _ in range(3):
            next(lines)
        started = hf_backend.tokens_generated
    time.sleep(1.0)  # the server notices the closed connection and stops the decoding loop
    after_close = hf_backend.tokens_generated
    time.sleep(1.5)
    assert hf_backend.tokens_generated == after_close, "tokens are still being generated"
    assert after_close - started < 100, "generation ran on long after the client left"

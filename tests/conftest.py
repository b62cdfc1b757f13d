"""Fixtures: the real default model, loaded once, served by the real app over real HTTP."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

import httpx
import openai
import pytest
import uvicorn

from assistant.app import SEMANTIC_FLOOR, create_app
from assistant.backends.base import Backend
from assistant.backends.hf import HFBackend
from assistant.db import migrate
from assistant.model_store import resolve_model_dir
from assistant.settings import Settings
from safety.guard import Guard
from safety.lexicon import Lexicon

MODEL = "smollm2-135m-instruct"


@dataclass
class Server:
    url: str
    admin_key: str
    settings: Settings
    backends: dict[str, Backend]

    def openai(self, key: str | None = None, **kwargs: object) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{self.url}/v1", api_key=key or self.admin_key, max_retries=0, **kwargs
        )

    def http(self, key: str | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {key or self.admin_key}"}, timeout=120
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_settings(data_dir: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "data_dir": data_dir,
        "model": {"max_tokens_default": 16, "max_tokens_limit": 256},
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def hf_backend() -> Iterator[HFBackend]:
    """The real default model, loaded once for the whole session."""
    settings = Settings()
    backend = HFBackend(partial(resolve_model_dir, settings.model.path, settings.cache_dir))
    asyncio.run(backend.start())
    assert backend.ready, backend.not_ready_reason
    yield backend
    asyncio.run(backend.close())


@pytest.fixture(scope="session")
def guard() -> Guard:
    """The real safety layer, semantic detectors included, loaded once for the session."""
    from safety.semantic import SemanticDetector

    detector = SemanticDetector(SEMANTIC_FLOOR, SEMANTIC_FLOOR)
    detector.load()
    return Guard(Lexicon.load(), detector)


@pytest.fixture(scope="session")
def serve(tmp_path_factory: pytest.TempPathFactory, guard: Guard) -> Iterator[Callable[..., Server]]:
    """Start the real app under uvicorn in a thread: ``serve(backends, **settings overrides)``."""
    running: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(
        backends: dict[str, Backend],
        wait_ready: bool = True,
        safety_layer: Guard | Literal["default"] | None = guard,
        **overrides: object,
    ) -> Server:
        settings = make_settings(tmp_path_factory.mktemp("data"), **overrides)
        migrate(settings.database_url)
        port = _free_port()
        config = uvicorn.Config(
            create_app(settings, backends, safety_layer), host="127.0.0.1", port=port, log_level="warning"
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        running.append((server, thread))
        deadline = time.monotonic() + 120
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port}"
        while wait_ready and httpx.get(f"{url}/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        return Server(url, settings.admin_key_file.read_text().strip(), settings, backends)

    yield start
    for server, thread in running:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="session")
def server(serve: Callable[..., Server], hf_backend: HFBackend) -> Server:
    """The service on the real default model."""
    return serve({MODEL: hf_backend})


@pytest.fixture(scope="session")
def client(server: Server) -> openai.OpenAI:
    return server.openai()


@pytest.fixture(scope="session")
def chat_key(server: Server) -> str:
    response = server.http().post("/v1/admin/keys", json={"name": "chat-user", "role": "chat"})
    assert response.status_code == 201, response.text
    return str(response.json()["key"])

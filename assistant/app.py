"""``create_app(settings)``: the Litestar application, its lifespan and its wiring."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, Literal

from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from assistant import keys
from assistant.auth import api_key_auth
from assistant.backends.base import Backend
from assistant.db import async_url, ensure_sqlite_dir
from assistant.errors import EXCEPTION_HANDLERS
from assistant.metrics import ServiceMetrics, metrics_endpoint
from assistant.own_thread import run_in_own_thread
from assistant.registry import ModelRegistry
from assistant.routes.admin import KeysController
from assistant.routes.chat import chat_completions
from assistant.routes.files import FilesController
from assistant.routes.fine_tuning import FineTuningController
from assistant.routes.models import delete_model, healthz, list_models, readyz
from assistant.routes.ollama import ollama_router
from assistant.routes.safety import safety_events
from assistant.settings import Settings
from assistant.workers import worker_config
from finetune.worker import create_celery
from safety.guard import Guard
from safety.lexicon import Lexicon

if TYPE_CHECKING:
    from safety.semantic import SemanticDetector

log = logging.getLogger(__name__)

SEMANTIC_FLOOR = 0.05


def hf_backend(settings: Settings, source: Callable[[], str]) -> Backend:
    from assistant.backends.hf import HFBackend

    return HFBackend(
        source,
        context_window=settings.model.context_window,
        max_batch=settings.model.max_batch,
        max_queued=settings.chat.max_queued_requests,
        queue_timeout=settings.model.queue_timeout,
        prefix_cache_size=settings.model.prefix_cache,
        threads=settings.model.threads,
        dtype=settings.model.dtype,
        four_bit=settings.model.four_bit,
    )


def default_backends(settings: Settings) -> dict[str, Backend]:
    """The configured models: the in-process HF model (unless disabled) and the Ollama ones."""
    from assistant.backends.ollama import OllamaBackend
    from assistant.model_store import resolve_model_dir

    served: dict[str, Backend] = {}
    if settings.model.enabled:
        source = partial(resolve_model_dir, settings.model.path, settings.cache_dir)
        served[settings.model.name] = hf_backend(settings, source)
    for model in settings.ollama_models:
        served[model.name] = OllamaBackend(model)
    return served


def fine_tuned_backend(settings: Settings, path: str) -> Backend:
    return hf_backend(settings, lambda: path)


async def _load_semantic(app: Litestar, detector: SemanticDetector) -> None:
    try:
        await run_in_own_thread(detector.load, "semantic-load")  # see own_thread
    except Exception as exc:
        app.state.safety_error = f"the semantic detector failed to load: {type(exc).__name__}: {exc}"
        log.error(app.state.safety_error)


async def provide_db_session(state: State) -> AsyncGenerator[AsyncSession, None]:
    async with state.sessions() as session:
        yield session


def default_guard(settings: Settings) -> Guard | None:
    """The safety layer from the settings; its semantic model loads in the app's lifespan."""
    if not settings.safety.enabled:
        return None
    from assistant.model_store import resolve_model_dir
    from safety.semantic import CLASSIFIER_FILES, SemanticDetector

    if not settings.safety.semantic:
        return Guard(Lexicon.load(), None)
    # The detector reports every score above a floor; each policy applies its own thresholds. The
    # chat-model encoder reads the bundled default model, whatever model the service is set to serve.
    semantic = SemanticDetector(
        SEMANTIC_FLOOR,
        SEMANTIC_FLOOR,
        classifier_path=CLASSIFIER_FILES[settings.safety.semantic_encoder],
        chat_model=partial(resolve_model_dir, None, settings.cache_dir),
    )
    return Guard(Lexicon.load(), semantic)


def create_app(
    settings: Settings,
    backends: dict[str, Backend] | None = None,
    guard: Guard | Literal["default"] | None = "default",
) -> Litestar:
    """The service. ``backends`` maps model names to backends (default: the configured HF model);
    ``guard`` is the safety layer (default: from the settings; None: off).

    Backends passed in are started but not closed: their owner closes them. Policy files are read
    here, so a bad policy stops the start with a message naming the field (``PolicyError``).
    """
    owns_backends = backends is None
    served = default_backends(settings) if backends is None else backends
    policies = settings.safety.load_policies()
    safety = default_guard(settings) if guard == "default" else guard

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        ensure_sqlite_dir(settings.database_url)
        engine = create_async_engine(async_url(settings.database_url))
        app.state.sessions = async_sessionmaker(engine, expire_on_commit=False)
        app.state.registry = ModelRegistry(
            served,
            app.state.sessions,
            partial(fine_tuned_backend, settings),
            settings.finetune.max_loaded_models,
        )
        app.state.metrics.watch(app.state.registry.serving)
        app.state.celery = create_celery(worker_config(settings))
        async with app.state.sessions() as session:
            if await session.run_sync(keys.bootstrap_admin_key, settings.admin_key_file):
                log.warning("created the first admin API key; it is in %s", settings.admin_key_file.resolve())
        loading = [asyncio.create_task(b.start()) for b in served.values()]
        if safety is not None and safety.semantic is not None:
            loading.append(asyncio.create_task(_load_semantic(app, safety.semantic)))
        try:
            yield
        finally:
            for task in loading:
                task.cancel()
            await app.state.registry.close()
            if owns_backends:
                for backend in served.values():
                    await backend.close()
            await engine.dispose()

    return Litestar(
        route_handlers=[
            chat_completions,
            list_models,
            delete_model,
            healthz,
            readyz,
            metrics_endpoint,
            KeysController,
            safety_events,
            FilesController,
            FineTuningController,
            ollama_router,
        ],
        lifespan=[lifespan],
        middleware=[api_key_auth()],
        dependencies={"db_session": Provide(provide_db_session)},
        exception_handlers=EXCEPTION_HANDLERS,
        request_max_body_size=settings.server.max_body_bytes,
        state=State(
            {
                "settings": settings,
                "backends": served,
                "guard": safety,
                "policies": policies,
                "started_at": int(time.time()),
                "metrics": ServiceMetrics(),
            }
        ),
        openapi_config=OpenAPIConfig(
            title="assistant",
            version="0.1.0",
            description="Customer-service chat assistant: OpenAI-compatible API with style and terms.",
            path="/docs",
            render_plugins=[SwaggerRenderPlugin()],
        ),
    )

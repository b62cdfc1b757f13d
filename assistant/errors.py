"""The one place where exceptions become HTTP answers, all in OpenAI's error envelope:

    {"error": {"message": ..., "type": ..., "param": ..., "code": ...}}

and, on the Ollama-compatible routes, in Ollama's ``{"error": "message"}`` (``OLLAMA_EXCEPTION_HANDLERS``).

Nothing here returns a traceback or an HTML page; unexpected errors are logged and answered with a
generic 500 envelope.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, SerializationException, ValidationException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from litestar.types import ExceptionHandlersMap

from assistant.backends.base import BackendError, BackendNotReady, BackendOverloaded
from assistant.chat import ChatError
from assistant.registry import UnknownModel
from finetune.file_store import FileInUse, FileNotFound
from finetune.jobs import JobError, JobNotFound

log = logging.getLogger(__name__)

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    502: "api_error",
    503: "service_unavailable",
}


class ApiError(Exception):
    """Raised by route handlers for an answer with a given status."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers or {}


def envelope(
    status: int,
    message: str,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response[dict[str, Any]]:
    error = {"message": message, "type": _TYPES.get(status, "api_error"), "param": param, "code": code}
    return Response({"error": error}, status_code=status, headers=headers)


def _api_error(_: Request[Any, Any, Any], exc: ApiError) -> Response[dict[str, Any]]:
    return envelope(exc.status, exc.message, exc.param, exc.code, exc.headers)


def _validation(_: Request[Any, Any, Any], exc: ValidationException) -> Response[dict[str, Any]]:
    problems = exc.extra if isinstance(exc.extra, list) else []
    if not problems:
        return envelope(400, str(exc.detail))
    first = problems[0]
    param = str(first.get("key") or "") or None
    message = "; ".join(f"{p.get('key') or 'body'}: {p.get('message')}" for p in problems)
    return envelope(422, message, param=param, code="invalid_value")


def _http(_: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, Any]]:
    status = exc.status_code
    if isinstance(exc.__cause__, SerializationException):
        return envelope(400, f"the request body is not valid JSON: {exc.detail}", code="invalid_json")
    if status >= 500:
        log.error("HTTP %s: %s", status, exc.detail)
    return envelope(status, str(exc.detail), headers=dict(exc.headers or {}))


def _chat(_: Request[Any, Any, Any], exc: ChatError) -> Response[dict[str, Any]]:
    return envelope(400, str(exc), exc.param, exc.code)


def _rejected(request: Request[Any, Any, Any], reason: str) -> None:
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.rejections.labels(reason).inc()


def _not_ready(request: Request[Any, Any, Any], exc: BackendNotReady) -> Response[dict[str, Any]]:
    _rejected(request, "not_ready")
    return envelope(503, f"not ready: {exc}", code="model_not_ready", headers={"Retry-After": "5"})


def _overloaded(request: Request[Any, Any, Any], exc: BackendOverloaded) -> Response[dict[str, Any]]:
    _rejected(request, "overloaded")
    retry = {"Retry-After": str(exc.retry_after)}
    return envelope(429, f"the server is busy: {exc}; retry shortly", code="overloaded", headers=retry)


def _backend(_: Request[Any, Any, Any], exc: BackendError) -> Response[dict[str, Any]]:
    log.warning("backend error: %s", exc)
    return envelope(502, f"the model backend failed: {exc}", code="backend_error")


def _unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return envelope(HTTP_500_INTERNAL_SERVER_ERROR, "internal error; the server log has the details")


def _job_error(_: Request[Any, Any, Any], exc: JobError) -> Response[dict[str, Any]]:
    return envelope(400, str(exc), exc.param, exc.code)


def _bad_request(_: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    return envelope(400, str(exc))


def _not_found(_: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    return envelope(404, str(exc), code="not_found")


def _unknown_model(_: Request[Any, Any, Any], exc: UnknownModel) -> Response[dict[str, Any]]:
    return envelope(404, str(exc), param="model", code="model_not_found")


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    UnknownModel: _unknown_model,
    JobError: _job_error,
    FileInUse: _bad_request,
    JobNotFound: _not_found,
    FileNotFound: _not_found,
    ApiError: _api_error,
    ValidationException: _validation,
    HTTPException: _http,
    ChatError: _chat,
    BackendNotReady: _not_ready,
    BackendOverloaded: _overloaded,
    BackendError: _backend,
    Exception: _unexpected,
}


def _ollama_shaped(handler: Callable[[Request[Any, Any, Any], Any], Response[Any]]) -> Any:
    """The same handler, its OpenAI envelope reshaped into Ollama's ``{"error": "message"}``."""

    def reshaped(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, str]]:
        response = handler(request, exc)
        message = response.content["error"]["message"]
        status = 400 if response.status_code == 422 else response.status_code  # Ollama has no 422
        return Response({"error": message}, status_code=status, headers=response.headers)

    return reshaped


OLLAMA_EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    kind: _ollama_shaped(handler) for kind, handler in EXCEPTION_HANDLERS.items()
}

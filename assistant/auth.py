"""API-key authentication: every route needs ``Authorization: Bearer <key>`` unless listed public."""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers import BaseRouteHandler
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult, DefineMiddleware

from assistant import keys

#: Paths anyone may call: probes and the API documentation. Everything else needs a key.
PUBLIC_PATHS = ("/healthz", "/readyz", "/metrics", "/docs")


def _bearer_token(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    scheme, _, token = connection.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise NotAuthorizedException("missing API key: send the header 'Authorization: Bearer <key>'")
    return token.strip()


class ApiKeyMiddleware(AbstractAuthenticationMiddleware):
    async def authenticate_request(
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        token = _bearer_token(connection)
        async with connection.app.state.sessions() as session:
            key = await session.run_sync(keys.authenticate, token)
        if key is None:
            raise NotAuthorizedException("invalid or revoked API key")
        return AuthenticationResult(user=key, auth=token)


def api_key_auth() -> DefineMiddleware:
    exclude = [rf"^{path}(/|$)" for path in PUBLIC_PATHS]
    return DefineMiddleware(ApiKeyMiddleware, exclude=exclude, exclude_http_methods=())


def admin_only(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard for admin routes."""
    if connection.user.role != "admin":
        raise PermissionDeniedException("this route needs an admin key; yours has the role 'chat'")

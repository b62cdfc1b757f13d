"""No route is open by accident; keys are stored hashed; the first start creates an admin key."""

from __future__ import annotations

import re
import sqlite3

import httpx
from click.testing import CliRunner

from assistant.app import create_app
from assistant.auth import PUBLIC_PATHS
from assistant.cli import main
from tests.conftest import Server, make_settings


def test_every_route_needs_a_key_unless_public(server: Server) -> None:
    app = create_app(server.settings, server.backends)
    checked = 0
    for route in app.routes:
        path = re.sub(r"\{[^}]+\}", "x", route.path)
        public = any(path == p or path.startswith(p + "/") for p in PUBLIC_PATHS)
        for method in sorted(route.methods - {"HEAD"}):  # type: ignore[attr-defined]
            response = httpx.request(method, f"{server.url}{path}")
            if public:
                assert response.status_code != 401, (method, path)
            else:
                assert response.status_code == 401, (method, path, response.status_code)
                error = response.json()["error"]
                if path.startswith("/api/"):  # Ollama's shape: {"error": "message"}
                    assert "API key" in error, (method, path, error)
                else:
                    assert error["type"] == "authentication_error"
                checked += 1
    assert checked >= 6  # the chat, models and admin routes, OPTIONS included


def test_public_paths_are_only_probes_and_docs(server: Server) -> None:
    assert set(PUBLIC_PATHS) == {"/healthz", "/readyz", "/metrics", "/docs"}
    assert httpx.get(f"{server.url}/docs/openapi.json").json()["info"]["title"] == "assistant"


def test_first_start_wrote_an_admin_key_stored_only_hashed(server: Server) -> None:
    key = server.settings.admin_key_file.read_text().strip()
    assert server.settings.admin_key_file.stat().st_mode & 0o077 == 0
    database = server.settings.data_dir / "assistant.db"
    rows = sqlite3.connect(database).execute("select name, role, key_hash, prefix from api_keys").fetchall()
    assert ("admin", "admin") in [(r[0], r[1]) for r in rows]
    assert key.encode() not in database.read_bytes()
    assert all(len(r[2]) == 64 and key != r[2] for r in rows)


def test_keys_cli_create_list_revoke(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(tmp_path)
    monkeypatch.setenv("ASSISTANT_DATA_DIR", str(settings.data_dir))
    runner = CliRunner()
    created = runner.invoke(main, ["keys", "create", "support-bot", "--role", "chat"])
    assert created.exit_code == 0, created.output
    key = created.output.strip().splitlines()[-1]
    assert key.startswith("sk-") and len(key) > 40
    listed = runner.invoke(main, ["keys", "list"]).output
    assert "support-bot\tchat" in listed and key not in listed and "active" in listed
    duplicate = runner.invoke(main, ["keys", "create", "support-bot"])
    assert duplicate.exit_code != 0 and "already exists" in duplicate.output
    assert runner.invoke(main, ["keys", "revoke", "support-bot"]).exit_code == 0
    assert "revoked" in runner.invoke(main, ["keys", "list"]).output
    missing = runner.invoke(main, ["keys", "revoke", "support-bot"])
    assert missing.exit_code != 0 and "no active key" in missing.output


def test_help_lists_the_commands() -> None:
    output = CliRunner().invoke(main, ["--help"]).output
    for command in ("serve", "migrate", "keys"):
        assert command in output

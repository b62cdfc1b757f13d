"""``assistant``: the command line. Heavy libraries load only inside the commands that need them."""

from __future__ import annotations

import json
import logging
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, cast

import click

from assistant.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


def _settings() -> Settings:
    from pydantic import ValidationError

    try:
        settings = Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'settings'}: {error['msg']}"
            for error in exc.errors()
        )
        raise click.ClickException(f"invalid settings (ASSISTANT_* variables): {problems}") from None
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return settings


@click.group(help="Self-hosted customer-service chat assistant. Settings come from ASSISTANT_* variables.")
def main() -> None:
    pass


@main.command(
    help="Run the API server (migrates the database first unless ASSISTANT_DATABASE__AUTO_MIGRATE=false)."
)
@click.option("--host", help="Listen address (default: ASSISTANT_SERVER__HOST).")
@click.option("--port", type=int, help="Listen port (default: ASSISTANT_SERVER__PORT).")
def serve(host: str | None, port: int | None) -> None:
    import uvicorn

    from assistant.app import create_app
    from assistant.db import migrate as run_migrations
    from assistant.workers import start_embedded_worker, stop_worker
    from safety.policy import PolicyError

    settings = _settings()
    if settings.database.auto_migrate:
        run_migrations(settings.database_url)
    try:
        app = create_app(settings)
    except PolicyError as exc:
        raise click.ClickException(f"invalid safety policy: {exc}") from exc
    worker = start_embedded_worker() if settings.finetune.embedded_worker else None
    if worker is not None:  # stopped in the app's shutdown: uvicorn re-raises SIGTERM once it is done
        app.on_shutdown.append(partial(stop_worker, worker))
    try:
        uvicorn.run(
            app,
            host=host or settings.server.host,
            port=port or settings.server.port,
            log_level=settings.log_level.lower(),
        )
    finally:
        if worker is not None:
            stop_worker(worker)


@main.command(help="Run a fine-tuning worker: takes jobs from the broker, one at a time.")
def worker() -> None:
    from assistant.db import migrate as run_migrations
    from assistant.workers import worker_config
    from finetune.worker import create_celery, run_worker

    settings = _settings()
    run_migrations(settings.database_url)
    run_worker(create_celery(worker_config(settings)), loglevel=settings.log_level.upper())


@main.group(help="Fine-tuning without the API or a worker.")
def finetune() -> None:
    pass


@finetune.command(
    "run",
    help="Train as a job would, from a TrainingConfig file (JSON or TOML; base_model defaults to the "
    "configured model), with a progress bar.",
)
@click.argument("config_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def finetune_run(config_file: Path) -> None:
    import tomllib

    from pydantic import ValidationError

    from assistant.model_store import resolve_model_dir
    from finetune.config import TrainingConfig
    from finetune.console import ConsoleObserver
    from finetune.progress import TrainingStopped
    from finetune.training import TrainingError, train

    settings = _settings()
    text = config_file.read_text()
    try:
        raw = tomllib.loads(text) if config_file.suffix == ".toml" else json.loads(text)
        if "base_model" not in raw:
            raw["base_model"] = resolve_model_dir(settings.model.path, settings.cache_dir)
        config = TrainingConfig.model_validate(raw)
    except (ValueError, ValidationError) as exc:
        raise click.ClickException(f"{config_file}: {exc}") from exc
    try:
        with ConsoleObserver() as observer:  # the first Ctrl-C stops after the current step
            result = train(config, observer)
    except TrainingError as exc:
        raise click.ClickException(str(exc)) from exc
    except TrainingStopped as exc:
        raise click.ClickException(
            f"{exc}; run the same command again to resume from the last checkpoint"
        ) from exc
    click.echo(f"adapter: {result.adapter_dir}\nmerged model: {result.merged_dir}")


@main.command(help="Bring the database schema up to date (alembic upgrade head).")
def migrate() -> None:
    from assistant.db import migrate as run_migrations

    settings = _settings()
    run_migrations(settings.database_url)
    click.echo("database is up to date")


@main.group(help="Create, list and revoke API keys.")
def keys() -> None:
    pass


def _session() -> Session:
    from sqlalchemy.orm import Session

    from assistant.db import migrate as run_migrations
    from assistant.db import sync_engine

    settings = _settings()
    run_migrations(settings.database_url)
    return Session(sync_engine(settings.database_url))


@keys.command("create", help="Create a key and print it (this is the only time it is shown).")
@click.argument("name")
@click.option("--role", type=click.Choice(["chat", "admin"]), default="chat", show_default=True)
@click.option("--policy", help="Safety policy for this key's requests (a file stem in the policies dir).")
def keys_create(name: str, role: str, policy: str | None) -> None:
    from assistant import keys as api_keys

    settings = Settings()
    known = settings.safety.load_policies()
    if policy is not None and policy not in known:
        raise click.ClickException(f"no policy named {policy!r}; known: {', '.join(sorted(known))}")
    with _session() as session:
        try:
            key = api_keys.create_key(session, name, cast(api_keys.Role, role), policy)
        except api_keys.DuplicateKeyName as exc:
            raise click.ClickException(str(exc)) from exc
    click.echo(key)


@keys.command("list", help="List keys (names, roles, prefixes; never the keys).")
def keys_list() -> None:
    from assistant import keys as api_keys

    with _session() as session:
        for key in api_keys.list_keys(session):
            state = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "active"
            created = f"created {key.created_at:%Y-%m-%d %H:%M}"
            policy = f"policy {key.policy or 'default'}"
            click.echo(f"{key.name}\t{key.role}\t{key.prefix}…\t{policy}\t{created}\t{state}")


@keys.command("revoke", help="Revoke the key with this name.")
@click.argument("name")
def keys_revoke(name: str) -> None:
    from assistant import keys as api_keys

    with _session() as session:
        try:
            api_keys.revoke_key(session, name)
        except api_keys.UnknownKey as exc:
            raise click.ClickException(str(exc)) from exc
    click.echo(f"revoked {name}")


@main.command(help="Write the top-level Modelfile: the configured model for `ollama create`.")
@click.option(
    "--output", type=click.Path(dir_okay=False, path_type=Path), default=Path("Modelfile"), show_default=True
)
def modelfile(output: Path) -> None:
    from assistant.ollama_export import service_modelfile

    output.write_text(service_modelfile(_settings()))
    click.echo(f"wrote {output}; next: ollama create assistant -f {output} && ollama run assistant")


@main.group(help="Export models for other servers.")
def export() -> None:
    pass


@export.command("ollama", help="Write a fine-tuned model (ft:...) as safetensors plus a Modelfile.")
@click.argument("model")
@click.option(
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder to create (default: exports/<model name with : as ->).",
)
def export_ollama(model: str, output: Path | None) -> None:
    from assistant.ollama_export import ExportError, export_fine_tuned

    settings = _settings()
    target = output or Path("exports") / model.replace(":", "-")
    with _session() as session:
        try:
            folder = export_fine_tuned(session, settings, model, target)
        except ExportError as exc:
            raise click.ClickException(str(exc)) from exc
    click.echo(f"wrote {folder}; next: ollama create {target.name} -f {folder / 'Modelfile'}")
    click.echo(f"then: ollama run {target.name}")


@main.command("config-table", help="Print the configuration table (Markdown) found in the README.")
def config_table() -> None:
    from assistant.config_table import render

    click.echo(render())

"""Alembic environment: the URL comes from the caller's config (``assistant migrate``) or the settings."""

from sqlalchemy import engine_from_config, pool

from alembic import context
from assistant.db import Base
from assistant.settings import Settings
from finetune.models import Base as FinetuneBase

config = context.config
url = config.get_main_option("sqlalchemy.url") or Settings().database_url
target_metadata = [Base.metadata, FinetuneBase.metadata]


def run_migrations_offline() -> None:
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connectable = engine_from_config({"sqlalchemy.url": url}, prefix="sqlalchemy.", poolclass=pool.NullPool)
    with connectable.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()

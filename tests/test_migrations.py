"""The Alembic migrations build exactly the schema the models declare."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData

from assistant.db import Base, migrate, sync_engine
from finetune.models import Base as FinetuneBase


def test_migrations_match_the_models(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'schema.db'}"
    migrate(url)
    with sync_engine(url).connect() as connection:
        declared = MetaData()
        for table in [*Base.metadata.tables.values(), *FinetuneBase.metadata.tables.values()]:
            table.to_metadata(declared)
        differences = compare_metadata(MigrationContext.configure(connection), declared)
    assert differences == []


def test_migrate_twice_is_harmless(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'again.db'}"
    migrate(url)
    migrate(url)

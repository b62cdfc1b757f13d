"""Uploaded files: a row in ``files`` and the bytes in ``<files_dir>/<id>.jsonl``.

A file is validated before anything is written, and its bytes land under a temporary name that is
renamed only once its row is committed: a bad or interrupted upload leaves nothing behind.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from finetune.files import FileStats
from finetune.models import FileRow, JobRow

#: What can be uploaded: training files, and prompt files for distillation (conversations without
#: the final answer).
PURPOSES = ("fine-tune", "distillation")
#: The purpose of files a job writes (its Modelfile); they cannot be uploaded.
RESULTS = "fine-tune-results"


class FileNotFound(Exception):
    pass


class FileInUse(Exception):
    pass


def file_path(files_dir: Path, file_id: str) -> Path:
    return files_dir / f"{file_id}.jsonl"


def store_file(
    session: Session, files_dir: Path, filename: str, purpose: str, data: bytes, stats: FileStats
) -> FileRow:
    row = FileRow(
        filename=filename, purpose=purpose, bytes=len(data), examples=stats.examples, tokens=stats.tokens
    )
    session.add(row)
    session.flush()  # assigns the id
    files_dir.mkdir(parents=True, exist_ok=True)
    partial = files_dir / f"{row.id}.partial"
    partial.write_bytes(data)
    try:
        session.commit()
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(file_path(files_dir, row.id))
    return row


def store_result_file(session: Session, files_dir: Path, filename: str, data: bytes) -> FileRow:
    """A file a job produced (``purpose="fine-tune-results"``), committed with the session's changes."""
    return store_file(session, files_dir, filename, RESULTS, data, FileStats(0, 0, 0))


def get_file(session: Session, file_id: str) -> FileRow:
    row = session.get(FileRow, file_id)
    if row is None:
        raise FileNotFound(f"no file with id {file_id!r}")
    return row


def list_files(session: Session, purpose: str | None = None) -> list[FileRow]:
    query = select(FileRow).order_by(FileRow.created_at.desc(), FileRow.id)
    if purpose is not None:
        query = query.where(FileRow.purpose == purpose)
    return list(session.scalars(query))


def read_file(session: Session, files_dir: Path, file_id: str) -> bytes:
    get_file(session, file_id)
    return file_path(files_dir, file_id).read_bytes()


def delete_file(session: Session, files_dir: Path, file_id: str) -> None:
    """Delete a file no unfinished job needs (a queued or running job would lose its data)."""
    row = get_file(session, file_id)
    users = session.scalars(
        select(JobRow.id).where(
            (JobRow.training_file == file_id) | (JobRow.validation_file == file_id),
            JobRow.status.in_(("validating_files", "queued", "running")),
        )
    ).first()
    if users is not None:
        raise FileInUse(f"file {file_id} is used by job {users}, which has not finished; cancel it first")
    session.delete(row)
    session.commit()
    file_path(files_dir, file_id).unlink(missing_ok=True)

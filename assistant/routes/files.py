"""``/v1/files``: upload, list, read and delete fine-tuning files (OpenAI's Files API), admin keys only."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal, cast

from litestar import Controller, Response, delete, get, post
from litestar.connection import ASGIConnection
from litestar.datastructures import State, UploadFile
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.handlers import BaseRouteHandler
from litestar.params import Body, FromPath, FromQuery
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from assistant.auth import admin_only
from assistant.backends.base import Backend, BackendNotReady, Message
from assistant.errors import ApiError
from assistant.settings import Settings
from finetune import file_store
from finetune.files import FileStats, FileValidationError, validate_chat_jsonl
from finetune.models import FileRow

UPLOAD_SLACK = 64 * 1024  # multipart headers and the purpose field around the file's bytes


class FileObject(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: Literal["processed"] = "processed"
    status_details: str | None = None

    @classmethod
    def of(cls, row: FileRow) -> FileObject:
        created = int(row.created_at.timestamp())
        return cls(id=row.id, bytes=row.bytes, created_at=created, filename=row.filename, purpose=row.purpose)


class FileList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FileObject]
    has_more: bool = False


class DeletedFile(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool = True


def tokenizer_backend(state: State) -> Backend:
    """The default model's backend: its tokenizer and context window judge uploaded examples."""
    settings: Settings = state.settings
    backend: Backend | None = state.backends.get(settings.model.name)
    if backend is None:
        raise ApiError(503, "no default model is configured to count the file's tokens")
    if not backend.ready:
        raise BackendNotReady(backend.not_ready_reason)
    return backend


async def _validated(state: State, data: bytes, purpose: str) -> FileStats:
    backend, settings = tokenizer_backend(state), state.settings

    def count(messages: list[dict[str, str]]) -> int:
        return backend.count_tokens(cast(list[Message], messages))

    try:
        return await asyncio.to_thread(
            validate_chat_jsonl,
            data,
            count_tokens=count,
            context_window=backend.context_window,
            min_examples=settings.finetune.min_examples,
            last_role="user" if purpose == "distillation" else "assistant",
        )
    except FileValidationError as exc:
        raise ApiError(400, f"invalid {purpose} file: {exc}", param="file", code="invalid_file") from exc


def within_upload_limit(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Refuse an upload whose declared size is over the limit before its body is read."""
    limit = connection.app.state.settings.finetune.max_file_bytes
    declared = connection.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit + UPLOAD_SLACK:
        raise ApiError(413, f"the upload is larger than the {limit}-byte limit for files", param="file")


class FilesController(Controller):
    path = "/v1/files"
    guards = [admin_only]  # noqa: RUF012 - Litestar's declared attribute

    @post(
        "/",
        status_code=200,
        summary="Upload chat JSONL (multipart: file, purpose=fine-tune, or distillation for prompts)",
        guards=[within_upload_limit],
        request_max_body_size=None,  # the settings' file limit applies instead (guard and read below)
    )
    async def upload(
        self,
        data: Annotated[dict[str, Any], Body(media_type=RequestEncodingType.MULTI_PART)],
        db_session: NamedDependency[AsyncSession],
        state: State,
    ) -> FileObject:
        settings: Settings = state.settings
        purpose, upload = data.get("purpose"), data.get("file")
        if purpose not in file_store.PURPOSES:
            expected = " or ".join(repr(p) for p in file_store.PURPOSES)
            raise ApiError(400, f"purpose must be {expected}, got {purpose!r}", param="purpose")
        if not isinstance(upload, UploadFile):
            raise ApiError(400, "the form has no file part named 'file'", param="file")
        content = await upload.read(settings.finetune.max_file_bytes + 1)
        if len(content) > settings.finetune.max_file_bytes:
            raise ApiError(
                413, f"the file is larger than {settings.finetune.max_file_bytes} bytes", param="file"
            )
        stats = await _validated(state, content, purpose)
        row = await db_session.run_sync(
            file_store.store_file,
            settings.files_dir,
            upload.filename or "upload.jsonl",
            purpose,
            content,
            stats,
        )
        return FileObject.of(row)

    @get("/", summary="List uploaded files, newest first")
    async def list_files(
        self, db_session: NamedDependency[AsyncSession], purpose: FromQuery[str | None] = None
    ) -> FileList:
        rows = await db_session.run_sync(file_store.list_files, purpose)
        return FileList(data=[FileObject.of(r) for r in rows])

    @get("/{file_id:str}", summary="One file's metadata")
    async def get_file(self, file_id: FromPath[str], db_session: NamedDependency[AsyncSession]) -> FileObject:
        return FileObject.of(await db_session.run_sync(file_store.get_file, file_id))

    @get("/{file_id:str}/content", summary="A file's content", media_type="application/jsonl")
    async def content(
        self, file_id: FromPath[str], db_session: NamedDependency[AsyncSession], state: State
    ) -> Response[bytes]:
        data = await db_session.run_sync(file_store.read_file, state.settings.files_dir, file_id)
        return Response(data, media_type="application/jsonl")

    @delete("/{file_id:str}", status_code=200, summary="Delete a file no unfinished job uses")
    async def delete_file(
        self, file_id: FromPath[str], db_session: NamedDependency[AsyncSession], state: State
    ) -> DeletedFile:
        await db_session.run_sync(file_store.delete_file, state.settings.files_dir, file_id)
        return DeletedFile(id=file_id)

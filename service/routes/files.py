"""Files: upload (streamed, checked line by line), list, retrieve, content, delete."""

from __future__ import annotations

import os
from typing import Literal

import anyio
from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse
from sqlalchemy import select

from jobs.status import ACTIVE_STATUSES
from jobs.store import File, Job, new_id, now
from service import audit
from service.deps import CurrentCaller, CurrentProject, SettingsDep, StoreDep
from service.errors import Conflict, InvalidRequest, NotFound
from service.guards import clean_filename
from service.pagination import list_body, page
from service.quotas import check_upload_quota, read_upload_room
from service.uploads import receive_jsonl_upload

router = APIRouter(prefix="/v1/files", tags=["files"])

PURPOSES = ("fine-tune",)


def file_object(row: File) -> dict:
    """The OpenAI file object, plus our line count and hash."""
    return {
        "id": row.id,
        "object": "file",
        "bytes": row.bytes,
        "created_at": row.created_at,
        "filename": row.filename,
        "purpose": row.purpose,
        "status": "processed",
        "status_details": None,
        "expires_at": None,
        "line_count": row.line_count,
        "sha256": row.sha256,
    }


def get_owned_file(session, project_id: str, file_id: str) -> File:
    """The caller's file, or 404 (also for another project's file)."""
    row = session.get(File, file_id)
    if row is None or row.project_id != project_id:
        raise NotFound(f"No such file: '{file_id}'.", param="file_id")
    return row


@router.post("")
async def upload_file(request: Request, project: CurrentProject, caller: CurrentCaller, settings: SettingsDep,
                      store: StoreDep) -> dict:
    """Upload a JSONL file of training rows."""
    # The project's file quotas, before a byte is read (and again at the insert).
    room = await anyio.to_thread.run_sync(read_upload_room, store, settings, project.id)
    room.check_declared(request.headers.get("content-length"))
    upload = await receive_jsonl_upload(
        request,
        temp_dir=settings.data_dir / "tmp",
        max_bytes=settings.max_upload_bytes,
        max_line_bytes=settings.max_line_bytes,
        max_lines=settings.max_file_lines,
        room=room,
    )
    try:
        purpose = upload.fields.get("purpose")
        if purpose not in PURPOSES:
            raise InvalidRequest(
                f"purpose must be one of {list(PURPOSES)}, got {purpose!r}.", param="purpose"
            )
        file_id = new_id("file")
        rel_path = os.path.join("files", f"{file_id}.jsonl")
        final = settings.data_dir / rel_path
        os.replace(upload.temp_path, final)
        row = File(
            id=file_id,
            project_id=project.id,
            filename=upload.filename,
            purpose=purpose,
            bytes=upload.checker.bytes,
            line_count=upload.checker.rows,
            sha256=upload.checker.sha256.hexdigest(),
            path=rel_path,
            item_keys=sorted(upload.checker.item_keys),
            created_at=now(),
        )
        try:
            with store.session() as session:
                check_upload_quota(session, settings, project.id, row.bytes)
                session.add(row)
                audit.record(session, caller, "file.create", "file", row.id,
                             {"filename": row.filename, "purpose": row.purpose, "bytes": row.bytes})
        except BaseException:
            final.unlink(missing_ok=True)
            raise
    finally:
        upload.temp_path.unlink(missing_ok=True)
    return file_object(row)


@router.get("")
def list_files(
    project: CurrentProject,
    store: StoreDep,
    after: str | None = None,
    limit: int = Query(default=20),
    order: Literal["asc", "desc"] = "desc",
    purpose: str | None = None,
) -> dict:
    """List the project's files, newest first by default."""
    with store.session() as session:
        query = select(File).where(File.project_id == project.id)
        if purpose:
            query = query.where(File.purpose == purpose)
        rows, has_more = page(session, query, File, after=after, limit=limit, newest_first=order == "desc")
        return list_body([file_object(r) for r in rows], has_more)


@router.get("/{file_id}")
def retrieve_file(file_id: str, project: CurrentProject, store: StoreDep) -> dict:
    """One file's metadata."""
    with store.session() as session:
        return file_object(get_owned_file(session, project.id, file_id))


@router.get("/{file_id}/content")
def file_content(file_id: str, project: CurrentProject, store: StoreDep, settings: SettingsDep) -> FileResponse:
    """The file's bytes, as uploaded."""
    with store.session() as session:
        row = get_owned_file(session, project.id, file_id)
    # Cleaned again: names stored before uploads were cleaned may hold control
    # characters, which must not reach the Content-Disposition header.
    return FileResponse(settings.data_dir / row.path, media_type="application/jsonl",
                        filename=clean_filename(row.filename) or "upload.jsonl")


@router.delete("/{file_id}")
def delete_file(file_id: str, project: CurrentProject, caller: CurrentCaller, store: StoreDep,
                settings: SettingsDep) -> dict:
    """Delete a file; refused while a job that is not finished uses it."""
    with store.session() as session:
        row = get_owned_file(session, project.id, file_id)
        user = session.scalar(
            select(Job.id).where(
                Job.status.in_(ACTIVE_STATUSES),
                (Job.training_file == file_id) | (Job.validation_file == file_id),
            )
        )
        if user is not None:
            raise Conflict(f"File '{file_id}' is in use by job '{user}', which has not finished.", param="file_id")
        path = settings.data_dir / row.path
        session.delete(row)
        audit.record(session, caller, "file.delete", "file", file_id, {"filename": row.filename})
    path.unlink(missing_ok=True)
    return {"id": file_id, "object": "file", "deleted": True}

"""API keys: created once, stored as a SHA-256 hash, looked up by that hash."""

from __future__ import annotations

import hashlib
import secrets
import time

from sqlalchemy import select
from sqlalchemy.orm import Session

from jobs.store import ApiKey, Project, new_id, now

KEY_PREFIX = "rft-"


def hash_key(key: str) -> str:
    """The stored form of a key. Keys are 256 random bits, so a plain hash suffices."""
    return hashlib.sha256(key.encode()).hexdigest()


def get_or_create_project(session: Session, name: str) -> Project:
    """The project called ``name``, created when missing."""
    project = session.scalar(select(Project).where(Project.name == name))
    if project is None:
        project = Project(id=new_id("proj"), name=name, created_at=now())
        session.add(project)
        session.flush()
    return project


def create_key(session: Session, project_name: str, expires_at: int | None = None) -> tuple[str, ApiKey]:
    """Create a key for the project (made when missing), refused from ``expires_at``
    (Unix seconds; None: never); returns the plain key, shown once."""
    project = get_or_create_project(session, project_name)
    plain = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(
        id=new_id("key"),
        project_id=project.id,
        key_hash=hash_key(plain),
        prefix=plain[: len(KEY_PREFIX) + 6],
        created_at=now(),
        expires_at=expires_at,
    )
    session.add(row)
    session.flush()
    return plain, row


def is_expired(row: ApiKey) -> bool:
    """True once the key's expiry time has come."""
    return row.expires_at is not None and time.time() >= row.expires_at


def key_and_project(session: Session, plain: str) -> tuple[ApiKey, Project] | None:
    """The key row (expired or not) and its project, or None for an unknown or revoked key."""
    row = session.scalar(
        select(ApiKey).where(ApiKey.key_hash == hash_key(plain), ApiKey.revoked_at.is_(None))
    )
    return (row, session.get(Project, row.project_id)) if row else None


def revoke_key(session: Session, key_id: str) -> ApiKey | None:
    """Revoke a key by id (an expired one too); the key, or None when there is no such
    unrevoked key."""
    row = session.get(ApiKey, key_id)
    if row is None or row.revoked_at is not None:
        return None
    row.revoked_at = now()
    return row

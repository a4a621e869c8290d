"""API keys: created once, stored as a SHA-256 hash, looked up by that hash."""

from __future__ import annotations

import hashlib
import secrets

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


def create_key(session: Session, project_name: str) -> tuple[str, ApiKey]:
    """Create a key for the project (made when missing); returns the plain key, shown once."""
    project = get_or_create_project(session, project_name)
    plain = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(
        id=new_id("key"),
        project_id=project.id,
        key_hash=hash_key(plain),
        prefix=plain[: len(KEY_PREFIX) + 6],
        created_at=now(),
    )
    session.add(row)
    session.flush()
    return plain, row


def project_for_key(session: Session, plain: str) -> Project | None:
    """The project a live key belongs to, or None for an unknown or revoked key."""
    row = session.scalar(
        select(ApiKey).where(ApiKey.key_hash == hash_key(plain), ApiKey.revoked_at.is_(None))
    )
    return session.get(Project, row.project_id) if row else None


def revoke_key(session: Session, key_id: str) -> bool:
    """Revoke a key by id; False when there is no such live key."""
    row = session.get(ApiKey, key_id)
    if row is None or row.revoked_at is not None:
        return False
    row.revoked_at = now()
    return True

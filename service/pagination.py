"""Cursor pagination in OpenAI's list shape: ``{object, data, has_more, first_id, last_id}``."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select
from sqlalchemy.orm import Session

from service.errors import InvalidRequest

MAX_LIMIT = 100


def check_limit(limit: int) -> int:
    """Refuse a page size outside 1..100."""
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidRequest(f"limit must be between 1 and {MAX_LIMIT}.", param="limit")
    return limit


def page(
    session: Session,
    query: Select,
    model: Any,
    *,
    after: str | None,
    limit: int,
    newest_first: bool = True,
    order_col: Any = None,
) -> tuple[list[Any], bool]:
    """One page of ``query`` rows after the row with id ``after``; returns (rows, has_more).

    Rows are ordered by ``order_col`` (default ``created_at``) then id, so ties in
    whole-second timestamps still give a stable order. The cursor is looked up among the
    rows of ``query`` itself (the caller's own), so another project's id reads exactly
    like an unknown one.
    """
    check_limit(limit)
    order_col = order_col if order_col is not None else model.created_at
    if after is not None:
        anchor = session.scalar(query.with_only_columns(order_col).where(model.id == after).limit(1))
        if anchor is None:
            raise InvalidRequest(f"No object with id '{after}' to page after.", param="after")
        if newest_first:
            query = query.where((order_col < anchor) | ((order_col == anchor) & (model.id < after)))
        else:
            query = query.where((order_col > anchor) | ((order_col == anchor) & (model.id > after)))
    if newest_first:
        query = query.order_by(order_col.desc(), model.id.desc())
    else:
        query = query.order_by(order_col.asc(), model.id.asc())
    rows = list(session.scalars(query.limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def list_body(data: list[dict], has_more: bool) -> dict:
    """The OpenAI list envelope."""
    return {
        "object": "list",
        "data": data,
        "has_more": has_more,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }

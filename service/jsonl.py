"""Incremental checking of fine-tuning JSONL, one line at a time as the bytes arrive."""

from __future__ import annotations

import hashlib
import json

from service.errors import InvalidRequest
from service.guards import MAX_JSON_DEPTH, check_json_depth

ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})


class JsonlError(ValueError):
    """A line of the upload is not a valid training row; ``line`` is 1-based."""

    def __init__(self, line: int, problem: str) -> None:
        super().__init__(f"Line {line}: {problem}")
        self.line = line
        self.problem = problem


def check_message(index: int, message: object) -> None:
    """Raise ValueError naming the message when it is not a ``{role, content}`` object."""
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        raise ValueError(f"{where} must be an object with 'role' and 'content'")
    role = message.get("role")
    if role not in ROLES:
        raise ValueError(f"{where}.role must be one of {sorted(ROLES)}, got {role!r}")
    content = message.get("content")
    if isinstance(content, str):
        return
    if isinstance(content, list) and all(
        isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
        for p in content
    ):
        return
    if content is None and role == "assistant" and message.get("tool_calls"):
        return
    raise ValueError(f"{where}.content must be a string or a list of text parts")


def check_row(row: object) -> dict:
    """Check one decoded line; returns it as a dict or raises ValueError with the problem."""
    if not isinstance(row, dict):
        raise ValueError(f"expected a JSON object, got {type(row).__name__}")
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValueError("'messages' must be a non-empty list of {role, content} objects")
    for i, message in enumerate(messages):
        check_message(i, message)
    return row


class JsonlChecker:
    """Feed it bytes as they stream in; it checks each complete line and keeps totals.

    Blank lines are skipped (a trailing newline is common) but still counted, so line
    numbers in errors match what an editor shows.
    """

    def __init__(self, max_line_bytes: int, max_lines: int) -> None:
        self.max_line_bytes = max_line_bytes
        self.max_lines = max_lines
        self.sha256 = hashlib.sha256()
        self.bytes = 0
        self.rows = 0
        self.item_keys: set[str] = set()
        self._line_no = 0
        self._pending = bytearray()

    def feed(self, chunk: bytes) -> None:
        """Take the next chunk of the body; raises JsonlError at the first bad line."""
        self.sha256.update(chunk)
        self.bytes += len(chunk)
        self._pending += chunk
        start = 0
        while (end := self._pending.find(b"\n", start)) != -1:
            self._check_line(bytes(self._pending[start:end]))
            start = end + 1
        del self._pending[:start]
        if len(self._pending) > self.max_line_bytes:
            raise JsonlError(self._line_no + 1, f"line is longer than {self.max_line_bytes} bytes")

    def finish(self) -> None:
        """The body has ended: check the last line and that there was at least one row."""
        if self._pending:
            self._check_line(bytes(self._pending))
            self._pending.clear()
        if self.rows == 0:
            raise JsonlError(max(self._line_no, 1), "the file is empty: it has no JSON lines")

    def _check_line(self, raw: bytes) -> None:
        self._line_no += 1
        if len(raw) > self.max_line_bytes:
            raise JsonlError(self._line_no, f"line is longer than {self.max_line_bytes} bytes")
        text = raw.strip()
        if not text:
            return
        try:
            check_json_depth(text)
        except InvalidRequest:
            raise JsonlError(self._line_no, f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
        try:
            row = check_row(json.loads(text))
        except RecursionError:
            raise JsonlError(self._line_no, "JSON nested too deeply") from None
        except UnicodeDecodeError:
            raise JsonlError(self._line_no, "not valid UTF-8") from None
        except json.JSONDecodeError as exc:
            raise JsonlError(self._line_no, f"invalid JSON ({exc.msg} at column {exc.colno})") from None
        except ValueError as exc:
            raise JsonlError(self._line_no, str(exc)) from None
        self.rows += 1
        if self.rows > self.max_lines:
            raise JsonlError(self._line_no, f"the file has more than {self.max_lines} rows")
        self.item_keys.update(k for k in row if k != "messages")

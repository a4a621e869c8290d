"""Streaming multipart upload: the file part goes to disk as it arrives, under a byte cap.

Nothing is buffered whole: the body is read chunk by chunk, the ``file`` part is
written to a temp file and checked line by line, and a body over the cap is refused
(413) as soon as the count passes it; so is a file part that outgrows what is left of
the project's upload quota (429). On any refusal the temp file is removed.

The form's own parts are bounded too: python-multipart caps a part's header lines
(4 kB and 8 lines by default; a 10 kB file name passes neither) and its refusal is a
400 like any malformed form; a form has at most ``MAX_FIELDS`` fields of
``MAX_FIELD_BYTES`` each and one ``file`` part, whose name is at most
``MAX_FILENAME_CHARS`` once control characters are cut out.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from service.errors import InvalidRequest, PayloadTooLarge
from service.guards import clean_filename
from service.jsonl import JsonlChecker, JsonlError
from service.quotas import UploadRoom, too_many_bytes

MAX_FIELD_BYTES = 4096
# The form has one other field (purpose); a few spare ones are ignored, thousands are
# an attack on the fields dict, not a form.
MAX_FIELDS = 16
# Most file systems' NAME_MAX; the stored name is shown back, never used on disk.
MAX_FILENAME_CHARS = 255
# RFC 2046 allows boundaries of 1 to 70 characters.
MAX_BOUNDARY_BYTES = 70


def _filename(raw: bytes | None) -> str:
    """The name to store for a ``filename`` parameter: its last path part without
    control characters; 400 when it is longer than ``MAX_FILENAME_CHARS``."""
    if raw is None:
        return "upload.jsonl"
    name = clean_filename(os.path.basename(raw.decode("utf-8", "replace")))
    if len(name) > MAX_FILENAME_CHARS:
        raise InvalidRequest(f"The file name is longer than {MAX_FILENAME_CHARS} characters.", param="file")
    return name or "upload.jsonl"


@dataclass
class _Part:
    headers: dict[str, str] = field(default_factory=dict)
    name: str = ""


@dataclass
class ReceivedUpload:
    """A checked upload waiting in a temp file to be moved into place."""

    temp_path: Path
    filename: str
    fields: dict[str, str]
    checker: JsonlChecker


async def receive_jsonl_upload(
    request: Request, temp_dir: Path, max_bytes: int, max_line_bytes: int, max_lines: int,
    room: UploadRoom | None = None,
) -> ReceivedUpload:
    """Read a multipart body with a ``file`` part of JSONL; raise 400/413 API errors, and
    a 429 once the file part outgrows the project's ``room`` (``service.quotas``)."""
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or b"boundary" not in params:
        raise InvalidRequest("Upload with multipart/form-data (fields 'file' and 'purpose').", param="file")
    if not 1 <= len(params[b"boundary"]) <= MAX_BOUNDARY_BYTES:
        raise InvalidRequest(f"The multipart boundary must be 1 to {MAX_BOUNDARY_BYTES} characters.", param="file")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"The upload is larger than the {max_bytes}-byte limit.", param="file")

    temp_dir.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(prefix=".upload-", suffix=".part", dir=temp_dir)
    temp_path = Path(temp_name)
    out = os.fdopen(fd, "wb")
    checker = JsonlChecker(max_line_bytes=max_line_bytes, max_lines=max_lines)
    fields: dict[str, bytearray] = {}
    state = {"part": _Part(), "header_field": bytearray(), "header_value": bytearray()}
    file_seen: dict[str, str | None] = {}
    errors: list[Exception] = []
    bytes_left = room.bytes_left if room is not None else None

    def on_part_begin() -> None:
        state["part"] = _Part()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["header_field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["header_value"] += data[start:end]

    def on_header_end() -> None:
        part: _Part = state["part"]
        part.headers[bytes(state["header_field"]).decode("latin-1").lower()] = bytes(
            state["header_value"]
        ).decode("latin-1")
        state["header_field"] = bytearray()
        state["header_value"] = bytearray()

    def on_headers_finished() -> None:
        part: _Part = state["part"]
        _, disp = parse_options_header(part.headers.get("content-disposition", ""))
        part.name = disp.get(b"name", b"").decode("utf-8", "replace")
        if part.name == "file":
            if "filename" in file_seen:
                # A second part would be appended to the first one's temp file.
                raise InvalidRequest("The form has more than one 'file' part.", param="file")
            file_seen["filename"] = _filename(disp.get(b"filename"))
        else:
            if len(fields) >= MAX_FIELDS:
                raise InvalidRequest(f"The form has more than {MAX_FIELDS} fields.", param="file")
            fields[part.name] = bytearray()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if errors:
            return
        part: _Part = state["part"]
        chunk = data[start:end]
        try:
            if part.name == "file":
                if bytes_left is not None and checker.bytes + len(chunk) > bytes_left:
                    raise too_many_bytes(room.settings, bytes_left)
                out.write(chunk)
                checker.feed(chunk)
            else:
                buf = fields[part.name]
                buf += chunk
                if len(buf) > MAX_FIELD_BYTES:
                    raise InvalidRequest(f"Form field '{part.name}' is too long.", param=part.name)
        except Exception as exc:  # first error wins; the rest of the body is not read
            errors.append(exc)

    def on_part_end() -> None:
        if errors:
            return
        if state["part"].name == "file":
            try:
                checker.finish()
            except JsonlError as exc:
                errors.append(exc)

    parser = MultipartParser(
        params[b"boundary"],
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > max_bytes:
                raise PayloadTooLarge(f"The upload is larger than the {max_bytes}-byte limit.", param="file")
            if errors:
                break  # a bad line was found: no need to read the rest
            try:
                parser.write(chunk)
            except MultipartParseError as exc:
                raise _malformed(exc) from None
        if not errors:
            try:
                parser.finalize()
            except MultipartParseError as exc:
                raise _malformed(exc) from None
        out.close()
        if errors:
            exc = errors[0]
            if isinstance(exc, JsonlError):
                raise InvalidRequest(
                    f"Invalid file: line {exc.line}: {exc.problem}", param="file", code="invalid_file_format"
                )
            raise exc
        if "filename" not in file_seen:
            raise InvalidRequest("Missing the 'file' part of the form.", param="file")
    except BaseException:
        out.close()
        temp_path.unlink(missing_ok=True)
        raise
    return ReceivedUpload(
        temp_path=temp_path,
        filename=file_seen["filename"],
        fields={k: v.decode("utf-8", "replace") for k, v in fields.items()},
        checker=checker,
    )


def _malformed(exc: MultipartParseError) -> InvalidRequest:
    # python-multipart's messages name the problem ("Maximum header size exceeded", "Did
    # not find boundary character ...") and carry no internals.
    return InvalidRequest(f"The multipart body is malformed: {exc}.", param="file", code="invalid_multipart")

"""Model names in user input: names, never file-system paths.

Every request field that names a model (a job's base ``model``, an LLM judge's
``model``, a ``reward_model`` grader's ``model``) names something the operator listed or
the caller owns, and the server finds its folder. A value that reads as a path is
refused before any lookup, with the same words whether or not something is there, so
nothing of the disk shows through (docs/models.md).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator

# The width of the columns that hold a model name (jobs.model, models.id).
MAX_MODEL_NAME_CHARS = 512


def path_problem(name: str) -> str | None:
    """Why ``name`` reads as a file-system path rather than a model name, or None.

    Refused: a NUL or a backslash; a leading ``/`` (absolute path), ``~`` (home) or
    ``.`` (relative or hidden); an empty, ``.`` or ``..`` part between slashes; more
    than one ``/`` (a hub id, ``org/name``, has exactly one).
    """
    if "\x00" in name:
        return "it contains a NUL character"
    if "\\" in name:
        return "it contains a backslash"
    if name.startswith("/"):
        return "it is an absolute path"
    if name.startswith("~"):
        return "it starts with '~'"
    if name.startswith("."):
        return "it starts with '.'"
    parts = name.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return "it has an empty, '.' or '..' part"
    if len(parts) > 2:
        return "it has more than one '/'"
    return None


def _check_model_name(name: str) -> str:
    if not name:
        raise ValueError("must name a model")
    if len(name) > MAX_MODEL_NAME_CHARS:
        raise ValueError(f"must be at most {MAX_MODEL_NAME_CHARS} characters")
    problem = path_problem(name)
    if problem:
        raise ValueError(f"must name a model, not a file-system path ({problem})")
    return name


# A grader spec field that names a model: a judge endpoint, a served model, a reward model.
ModelName = Annotated[str, AfterValidator(_check_model_name)]

"""Finding base models without importing torch.

A base model comes from the operator, never from the caller's file system. A job names
it as one of:
- a folder name under the models dir (the operator's registered models, the demo model);
- a fine-tuned model of the same project (continue tuning a tuned model; see the API),
  looked up by its name by the caller of this module, never by path;
- a hub id such as ``Qwen/Qwen2.5-0.5B-Instruct`` (when the operator allows hub models),
  loaded the normal transformers way by the trainer; nothing here touches the network;
- an absolute path to a local Hugging Face folder, only when the operator turned on
  ``RFT_ALLOW_LOCAL_MODEL_PATHS``, which is unsafe on a shared server: any caller can
  then train on (and download as ``step-0``) any model folder the service can read.
  Even then a path into the service's data dir or to an rft checkpoint is refused.

Anything else that reads as a path (``graders.names.path_problem``) is refused with the
same words whether or not something is there. The API resolves a job's model with these
rules and the worker resolves it again with them before training, so a job stored
without the API's checks gains nothing.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from graders.names import MAX_MODEL_NAME_CHARS, path_problem

HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
COMPLETE_MARKER = "COMPLETE"


class UnknownModel(LookupError):
    """The named base model is not one we can train or serve."""


@dataclass(frozen=True)
class BaseModel:
    """A base model: its public name and where its weights are (a folder or a hub id)."""

    name: str
    location: str
    created_at: int = 0
    is_local: bool = True


def is_model_folder(path: Path) -> bool:
    """True for a folder that holds a Hugging Face model (config.json) not still being built."""
    return (path / "config.json").is_file() and not (path / ".building").exists()


def registered_model(models_dir: Path, name: str) -> Path | None:
    """The folder of registered base model ``name`` (a model folder directly under
    ``models_dir``), or None. Never raises: a name no file system can hold
    (over 255 bytes, NUL) or one that is a path is simply not registered."""
    if not name or path_problem(name) or "/" in name or len(name.encode("utf-8", "surrogatepass")) > 255:
        return None
    folder = models_dir / name
    try:
        return folder if folder.is_dir() and is_model_folder(folder) else None
    except OSError:
        return None


def list_base_models(models_dir: Path) -> list[BaseModel]:
    """The registered base models: each sub-folder of ``models_dir`` holding a model."""
    if not models_dir.is_dir():
        return []
    found = []
    for child in sorted(models_dir.iterdir()):
        if child.is_dir() and not child.name.startswith(".") and is_model_folder(child):
            found.append(BaseModel(child.name, str(child), int(child.stat().st_mtime)))
    return found


def shown_name(name: str) -> str:
    """``name`` as a message may echo it: printable and short."""
    text = name.encode("unicode_escape").decode("ascii")
    return text if len(text) <= 80 else text[:77] + "..."


def is_rft_checkpoint(path: Path) -> bool:
    """True for a folder an rft job wrote: a checkpoint (its COMPLETE marker) or anything
    under a ``jobs/<job id>/checkpoints`` tree (a checkpoint still being saved included)."""
    parts = path.parts
    for i in range(len(parts) - 2):
        if parts[i] == "jobs" and parts[i + 2] == "checkpoints":
            return True
    return (path / COMPLETE_MARKER).exists()


def _local_folder(name: str, data_dir: Path | None) -> BaseModel:
    """An absolute path the operator allows (``RFT_ALLOW_LOCAL_MODEL_PATHS``), checked."""
    bad = "\x00" in name or any(part in (".", "..") for part in name.split("/"))
    if bad:
        raise UnknownModel(f"Base model '{shown_name(name)}' is not a clean absolute path (no '.', '..' or NUL).")
    path = Path(os.path.realpath(name))
    if data_dir is not None and path.is_relative_to(Path(os.path.realpath(data_dir))):
        # The data dir holds every project's uploads and checkpoints: never by path, and
        # the same words whether or not anything is there.
        raise UnknownModel(f"Base model '{shown_name(name)}' is inside this server's data directory; "
                           "name the model instead (GET /v1/models lists them).")
    if is_rft_checkpoint(path):
        raise UnknownModel(f"Base model '{shown_name(name)}' is an rft checkpoint folder; name its model instead.")
    if path.is_dir() and is_model_folder(path):
        return BaseModel(path.name, str(path), int(path.stat().st_mtime))
    raise UnknownModel(f"'{shown_name(name)}' is not a folder with a Hugging Face model (config.json).")


def resolve_base_model(
    name: str, models_dir: Path, *, allow_local_paths: bool, allow_hub: bool, data_dir: Path | None = None
) -> BaseModel:
    """Resolve a base model name; raise UnknownModel with a message the user can act on.

    ``data_dir`` (the service's data dir) is refused as a place for local paths. Names
    of fine-tuned models (``ft:...``) are the caller's to look up, by name.
    """
    if not name or len(name) > MAX_MODEL_NAME_CHARS:
        raise UnknownModel(f"A base model name is 1 to {MAX_MODEL_NAME_CHARS} characters.")
    if name.startswith("/") and allow_local_paths:
        return _local_folder(name, data_dir)
    if path_problem(name):
        if name.startswith("/"):
            raise UnknownModel("Local model paths are disabled on this server; use a model name "
                               "(GET /v1/models lists them).")
        raise UnknownModel(f"Base model '{shown_name(name)}' is a file-system path, not a model name; "
                           "use a model name (GET /v1/models lists them).")
    if "/" not in name:
        registered = registered_model(models_dir, name)
        if registered is not None:
            return BaseModel(name, str(registered), int(registered.stat().st_mtime))
    elif HUB_ID.match(name):
        if not allow_hub:
            raise UnknownModel(f"Hub models are disabled on this server; '{shown_name(name)}' is not registered.")
        if os.path.lexists(name):
            # transformers loads an existing local folder before it asks the hub: a
            # relative path dressed as a hub id would reach the disk.
            raise UnknownModel(f"'{shown_name(name)}' names a folder on this machine, not a hub model.")
        return BaseModel(name, name, 0, is_local=False)
    known = ", ".join(m.name for m in list_base_models(models_dir)) or "none"
    raise UnknownModel(f"Unknown base model '{shown_name(name)}'. Registered models: {known}.")

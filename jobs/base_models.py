"""Finding base models without importing torch.

A base model is named in a job as one of:
- a folder name under the models dir (the operator's registered models, the demo model);
- a fine-tuned model of the same project (continue tuning a tuned model; see the API);
- an absolute path to a local Hugging Face folder (when the operator allows it);
- a hub id such as ``Qwen/Qwen2.5-0.5B-Instruct`` (when the operator allows it), loaded
  the normal transformers way by the trainer; nothing here touches the network.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

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


def list_base_models(models_dir: Path) -> list[BaseModel]:
    """The registered base models: each sub-folder of ``models_dir`` holding a model."""
    if not models_dir.is_dir():
        return []
    found = []
    for child in sorted(models_dir.iterdir()):
        if child.is_dir() and not child.name.startswith(".") and is_model_folder(child):
            found.append(BaseModel(child.name, str(child), int(child.stat().st_mtime)))
    return found


def resolve_base_model(
    name: str, models_dir: Path, *, allow_local_paths: bool, allow_hub: bool
) -> BaseModel:
    """Resolve a base model name; raise UnknownModel with a message the user can act on."""
    registered = models_dir / name
    if "/" not in name and registered.is_dir() and is_model_folder(registered):
        return BaseModel(name, str(registered), int(registered.stat().st_mtime))
    if name.startswith("/"):
        if not allow_local_paths:
            raise UnknownModel("Local model paths are disabled on this server; use a registered model name.")
        path = Path(name)
        if path.is_dir() and is_model_folder(path):
            return BaseModel(path.name, str(path), int(path.stat().st_mtime))
        raise UnknownModel(f"'{name}' is not a folder with a Hugging Face model (config.json).")
    if HUB_ID.match(name):
        if not allow_hub:
            raise UnknownModel(f"Hub models are disabled on this server; '{name}' is not registered.")
        return BaseModel(name, name, 0, is_local=False)
    known = ", ".join(m.name for m in list_base_models(models_dir)) or "none"
    raise UnknownModel(f"Unknown base model '{name}'. Registered models: {known}.")

"""Downloadable archives of model folders (torch-free: the API process imports this).

``archive_for(folder, cache_dir, name)`` returns a tar of a Hugging Face model folder
and its sha256, building it once and reusing it while the folder is unchanged. The tar
holds one top-level directory ``name/`` with the folder's top-level files (weights,
config, generation config, tokenizer, chat template) and, for LoRA checkpoints, the
``adapter/`` folder beside them; ``trainer_state/`` (optimizer, RNG: what resume needs)
and bookkeeping files stay out. What it extracts to loads with
``AutoModelForCausalLM.from_pretrained`` as it is.

Concurrency: builders for the same folder serialise on a lock file (across processes
too), each archive is written to a temp file and renamed into place, and its sidecar
(sha256, size) is renamed in only after it, so a reader that finds the sidecar always
finds the finished archive it describes.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# Subfolders that are part of a download; everything else below the top level (the
# trainer's resume state) is not.
INCLUDED_SUBDIRS = ("adapter",)
# Files that describe the checkpoint to this service, not the model to its user.
EXCLUDED_FILES = ("COMPLETE",)
# The directory name inside the tar: derived from a model id, never a path. No ":" so
# that it extracts on every file system.
_SAFE_NAME = re.compile(r"[A-Za-z0-9_+-][A-Za-z0-9._+-]*")


@dataclass(frozen=True)
class Archive:
    """A finished archive: where it is, its sha256 (hex) and its size in bytes."""

    path: Path
    sha256: str
    size: int


def archive_dirname(model_id: str) -> str:
    """A directory name for ``model_id`` that is safe on any file system
    (``ft:base:suffix:ftjob-1`` -> ``ft-base-suffix-ftjob-1``)."""
    name = re.sub(r"[^A-Za-z0-9._+-]+", "-", model_id).strip("-.")
    return name or "model"


def archive_members(folder: Path) -> list[Path]:
    """Files that go into the archive, relative to ``folder``, in a fixed order."""
    members = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or entry.name in EXCLUDED_FILES:
            continue
        if entry.is_file():
            members.append(Path(entry.name))
        elif entry.is_dir() and entry.name in INCLUDED_SUBDIRS:
            members.extend(sorted(p.relative_to(folder) for p in entry.rglob("*")
                                  if p.is_file() and not p.name.startswith(".")))
    return members


def archive_for(folder: str | Path, cache_dir: str | Path, name: str) -> Archive:
    """The archive of ``folder`` (top-level directory ``name``), built if the cache has
    none for the folder's current content. Blocking: call it from a worker thread."""
    folder, cache_dir = Path(folder), Path(cache_dir)
    if not _SAFE_NAME.fullmatch(name):
        raise ValueError(f"archive directory name {name!r} must match {_SAFE_NAME.pattern}")
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} is not a model folder (no config.json)")
    cache_dir.mkdir(parents=True, exist_ok=True)
    members = archive_members(folder)
    stem = f"{_folder_key(folder)}-{_content_key(folder, members, name)}"
    with open(cache_dir / f"{_folder_key(folder)}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = _read_sidecar(cache_dir, stem)
        if found is not None:
            return found
        # Older archives of this folder stay until remove_archives: a request may be
        # about to send one, and checkpoint folders do not change once complete.
        return _build(folder, members, cache_dir, stem, name)


def remove_archives(folder: str | Path, cache_dir: str | Path) -> int:
    """Delete every cached archive of ``folder`` (when its model is deleted); returns
    how many files went."""
    removed = 0
    for p in Path(cache_dir).glob(_folder_key(Path(folder)) + "-*"):
        p.unlink(missing_ok=True)
        removed += 1
    return removed


def _folder_key(folder: Path) -> str:
    return hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:20]


def _content_key(folder: Path, members: list[Path], name: str) -> str:
    """Changes whenever a member is added, removed, resized or rewritten."""
    h = hashlib.sha256(name.encode())
    for rel in members:
        st = (folder / rel).stat()
        h.update(f"\0{rel}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return h.hexdigest()[:20]


def _read_sidecar(cache_dir: Path, stem: str) -> Archive | None:
    sidecar, tar_path = cache_dir / f"{stem}.json", cache_dir / f"{stem}.tar"
    if not sidecar.is_file() or not tar_path.is_file():
        return None
    meta = json.loads(sidecar.read_text())
    return Archive(path=tar_path, sha256=meta["sha256"], size=meta["size"])


class _HashingWriter:
    """File wrapper that hashes what tarfile writes, so the archive is read once."""

    def __init__(self, raw):
        self.raw, self.sha, self.size = raw, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.raw.write(data)

    def tell(self) -> int:
        return self.size


def _build(folder: Path, members: list[Path], cache_dir: Path, stem: str, name: str) -> Archive:
    fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=".tar.tmp", dir=cache_dir)
    try:
        with os.fdopen(fd, "wb") as raw:
            out = _HashingWriter(raw)
            with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for rel in members:
                    tar.add(folder / rel, arcname=f"{name}/{rel}", recursive=False, filter=_normalise)
            raw.flush()
            os.fsync(raw.fileno())
        tar_path = cache_dir / f"{stem}.tar"
        os.replace(tmp, tar_path)
        _write_atomic(cache_dir / f"{stem}.json", json.dumps({"sha256": out.sha.hexdigest(), "size": out.size}))
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    log.info("built archive %s of %s (%d files, %d bytes)", tar_path.name, folder, len(members), out.size)
    return Archive(path=tar_path, sha256=out.sha.hexdigest(), size=out.size)


def _normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
    # Owner names of the server's account mean nothing on the user's machine.
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o644
    return info


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


"""Download archives (torch-free): contents, caching, concurrency, removal."""

from __future__ import annotations

import hashlib
import shutil
import tarfile
from concurrent.futures import ThreadPoolExecutor

import pytest

from jobs.export import archive_dirname, archive_for, remove_archives


@pytest.fixture
def checkpoint(tmp_path):
    """A LoRA-style checkpoint folder: merged model on top, adapter/ and trainer_state/ beside."""
    folder = tmp_path / "step-10"
    folder.mkdir()
    for name in ("config.json", "generation_config.json", "tokenizer.json", "chat_template.jinja"):
        (folder / name).write_text("{}")
    (folder / "model.safetensors").write_bytes(b"\0" * 4096)
    (folder / "COMPLETE").write_text("")
    (folder / "adapter").mkdir()
    (folder / "adapter" / "adapter_config.json").write_text("{}")
    (folder / "adapter" / "adapter_model.safetensors").write_bytes(b"\1" * 64)
    (folder / "trainer_state").mkdir()
    (folder / "trainer_state" / "optimizer.pt").write_bytes(b"resume")
    return folder


def test_contents_and_hash(checkpoint, tmp_path):
    archive = archive_for(checkpoint, tmp_path / "exports", "ft-model")
    assert hashlib.sha256(archive.path.read_bytes()).hexdigest() == archive.sha256
    assert archive.path.stat().st_size == archive.size
    with tarfile.open(archive.path) as tar:
        names = tar.getnames()
    assert names == sorted(names)
    assert "ft-model/model.safetensors" in names
    assert "ft-model/adapter/adapter_model.safetensors" in names
    assert not any("trainer_state" in n or n.endswith("COMPLETE") for n in names)


def test_cached_until_the_folder_changes(checkpoint, tmp_path):
    first = archive_for(checkpoint, tmp_path / "exports", "m")
    assert archive_for(checkpoint, tmp_path / "exports", "m") == first
    (checkpoint / "config.json").write_text('{"changed": true}')
    assert archive_for(checkpoint, tmp_path / "exports", "m").sha256 != first.sha256


def test_concurrent_requests_build_one_archive(checkpoint, tmp_path):
    with ThreadPoolExecutor(8) as pool:
        archives = list(pool.map(lambda _: archive_for(checkpoint, tmp_path / "exports", "m"), range(8)))
    assert len(set(archives)) == 1
    assert len(list((tmp_path / "exports").glob("*.tar"))) == 1
    assert not list((tmp_path / "exports").glob(".*"))  # no temp files left


def test_same_bytes_from_a_copy(checkpoint, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(checkpoint, copy, copy_function=shutil.copy2)
    a = archive_for(checkpoint, tmp_path / "e1", "m")
    b = archive_for(copy, tmp_path / "e2", "m")
    assert a.sha256 == b.sha256  # deterministic: no owner names, times from the files


def test_remove_archives(checkpoint, tmp_path):
    archive_for(checkpoint, tmp_path / "exports", "a")
    archive_for(checkpoint, tmp_path / "exports", "b")
    assert remove_archives(checkpoint, tmp_path / "exports") == 4  # two tars, two sidecars
    assert not list((tmp_path / "exports").glob("*.tar"))


def test_names(checkpoint, tmp_path):
    assert archive_dirname("ft:rft-demo-tiny:proj:ftjob-1") == "ft-rft-demo-tiny-proj-ftjob-1"
    with pytest.raises(ValueError):
        archive_for(checkpoint, tmp_path / "exports", "../escape")
    with pytest.raises(FileNotFoundError):
        archive_for(tmp_path, tmp_path / "exports", "m")

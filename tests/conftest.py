"""Fixtures shared by every test package."""

import json
import os

# Tests never reach a model hub; set before anything imports transformers.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """Folder holding an untrained ~6k-parameter causal LM, char tokenizer and chat template.

    Built once per test session by ``jobs.demo_model.build_tiny_model`` (imports torch,
    so the import is inside the fixture: API-only test runs stay torch-free).
    """
    from jobs.demo_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def api_server(tmp_path_factory):
    """``rft serve`` with no worker and no inference process: the API alone, for fast tests."""
    from tests.server import start_server

    root = tmp_path_factory.mktemp("api-server")
    # One configured reward model (never loaded here: no inference process) so that
    # engine graders get past the name check and show what happens without an engine.
    server = start_server(root / "data", env={"RFT_REWARD_MODELS": json.dumps({"sentiment": str(root / "no-model")})})
    yield server
    server.stop()


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory, tiny_model_dir):
    """A models dir registering the tiny model as base model ``tiny``."""
    import shutil

    root = tmp_path_factory.mktemp("models")
    shutil.copytree(tiny_model_dir, root / "tiny")
    return root


@pytest.fixture(scope="session")
def jobs_api_server(tmp_path_factory, models_dir):
    """The API alone (no worker), with the tiny model registered: jobs stay queued."""
    from tests.server import start_server

    root = tmp_path_factory.mktemp("jobs-api-server")
    server = start_server(root / "data", env={"RFT_MODELS_DIR": str(models_dir)})
    yield server
    server.stop()

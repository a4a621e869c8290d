"""Chat completions and completions, forwarded to the inference process.

The body is OpenAI's, passed on as it is: the inference process validates it and
answers in OpenAI's shapes. This route only resolves ``model`` (404 when the caller
may not use it) and adds ``model_path``, which the caller can never choose. What the
inference process cannot take (JSON it cannot parse, an empty prompt) is refused here.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from service import inference_client
from service.deps import CurrentProject, SettingsDep, StoreDep
from service.errors import InvalidRequest
from service.guards import parse_json_body
from service.model_lookup import check_model_name, find_model

router = APIRouter(prefix="/v1", tags=["inference"])


@router.post("/chat/completions")
async def chat_completions(request: Request, project: CurrentProject, store: StoreDep, settings: SettingsDep):
    """OpenAI's chat completions; ``stream: true`` answers with server-sent events."""
    return await _forward(request, project.id, store, settings, "/internal/chat/completions")


@router.post("/completions")
async def completions(request: Request, project: CurrentProject, store: StoreDep, settings: SettingsDep):
    """OpenAI's (legacy) text completions."""
    return await _forward(request, project.id, store, settings, "/internal/completions")


def _check_prompt(prompt: Any) -> None:
    """A prompt is a non-empty string or a non-empty list of them. An empty one would
    give the model no token to start from. Other types are left to the inference
    process, which refuses them by name."""
    if prompt == "" or prompt == [] or (isinstance(prompt, list) and "" in prompt):
        raise InvalidRequest("prompt must be a non-empty string or a non-empty list of non-empty strings.",
                             param="prompt")


async def _forward(request: Request, project_id: str, store, settings, path: str):
    body = parse_json_body(await request.body())
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    model_id = body.get("model")
    if not isinstance(model_id, str) or not model_id:
        raise InvalidRequest("`model` is required: a base model, fine-tuned model or checkpoint name.",
                             param="model")
    check_model_name(model_id)  # before the prompt: an impossible name is a 404 first
    if path == "/internal/completions":
        _check_prompt(body.get("prompt"))
    with store.session() as session:
        model = find_model(session, settings, project_id, model_id)
    body["model_path"] = str(model.folder)
    return await inference_client.forward(settings, path, body, stream=body.get("stream") is True)

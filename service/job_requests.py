"""Checking a job-creation body whole, before anything is stored or queued.

Every refusal is an ``InvalidRequest`` whose ``param`` is the dotted path of the field
to change (``method.reinforcement.grader.reference``, ``training_file``, ...).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

import graders
from graders.names import MAX_MODEL_NAME_CHARS
from jobs.base_models import UnknownModel, registered_model, resolve_base_model, shown_name
from jobs.hyperparams import (
    HyperparameterError,
    count_parameters_from_config,
    resolve_hyperparameters,
)
from jobs.store import Checkpoint, File, Model, Project
from jobs.structured.response_format import ResponseFormatError, parse_response_format
from service.errors import InvalidRequest
from service.settings import Settings

TOP_LEVEL_FIELDS = {
    "model", "training_file", "validation_file", "suffix", "seed", "metadata", "method",
    "hyperparameters", "integrations",
}
METHOD_TYPES = ("reinforcement",)
ALGORITHMS = ("grpo", "rloo")
REINFORCEMENT_FIELDS = {"grader", "response_format", "hyperparameters", "algorithm"}
SUFFIX = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
FILE_ID_MAX = 64  # the width of files.id

log = logging.getLogger(__name__)


@dataclass
class CheckedJob:
    """A creation body that passed every check, with every "auto" resolved."""

    model: str
    training_file: File
    validation_file: File | None
    suffix: str | None
    seed: int
    metadata: dict[str, str] | None
    method: dict[str, Any]


def body_hash(body: Any) -> str:
    """A stable hash of a request body, for Idempotency-Key replays."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _owned_file(session: Session, project: Project, file_id: Any, param: str) -> File:
    if not isinstance(file_id, str) or not file_id:
        raise InvalidRequest(f"{param} must be a file id.", param=param)
    # An id no row can have (too long for the column, a NUL some databases refuse to
    # compare) reads exactly like another project's or a missing one.
    row = session.get(File, file_id) if len(file_id) <= FILE_ID_MAX and "\x00" not in file_id else None
    if row is None or row.project_id != project.id:
        raise InvalidRequest(f"File '{shown_name(file_id)}' does not exist.", param=param, code="file_not_found")
    return row


def _own_model_row(session: Session, project: Project, name: str) -> Model | None:
    """The caller's fine-tuned model called ``name``; None for another project's too."""
    if len(name) > MAX_MODEL_NAME_CHARS or "\x00" in name:
        return None
    row = session.get(Model, name)
    return row if row is not None and row.project_id == project.id else None


def _own_checkpoint(session: Session, project: Project, name: str) -> Checkpoint | None:
    if len(name) > MAX_MODEL_NAME_CHARS or "\x00" in name:
        return None
    return session.scalar(select(Checkpoint).where(Checkpoint.model_name == name,
                                                   Checkpoint.project_id == project.id))


def _model_params(session: Session, project: Project, settings: Settings, name: Any) -> int | None:
    """Check the base model exists and the caller may use it; return its parameter count
    when its config tells it.

    By name only: a registered base model, an allowed hub id, or the caller's own
    fine-tuned model. Another project's model reads exactly like a missing one. A local
    path is accepted only when the operator turned on ``allow_local_model_paths``
    (unsafe on shared servers), and never one into the data dir.
    """
    if not isinstance(name, str) or not name:
        raise InvalidRequest("model must name a base model or a fine-tuned model.", param="model")
    if name.startswith("ft:"):
        tuned = _own_model_row(session, project, name)
        if tuned is None:
            if _own_checkpoint(session, project, name) is not None:
                raise InvalidRequest(
                    f"'{name}' is a checkpoint; a job starts from a base model or a fine-tuned model "
                    "(its job's fine_tuned_model).", param="model", code="model_not_supported")
            raise InvalidRequest(f"Fine-tuned model '{shown_name(name)}' does not exist.", param="model",
                                 code="model_not_found")
        location = str(settings.data_dir / tuned.path)
    else:
        try:
            base = resolve_base_model(
                name, settings.resolved_models_dir, allow_local_paths=settings.allow_local_model_paths,
                allow_hub=settings.allow_hub_models, data_dir=settings.data_dir,
            )
        except UnknownModel as exc:
            raise InvalidRequest(str(exc), param="model", code="model_not_found") from None
        location = base.location
        if base.is_local and name.startswith("/"):
            log.warning("project %s: job base model is the local folder %s (RFT_ALLOW_LOCAL_MODEL_PATHS is on; "
                        "unsafe on a shared server)", project.id, location)
    return count_parameters_from_config(location)


def grader_models(spec: Any, param: str) -> list[tuple[str, str, str]]:
    """(param, grader type, model) for each grader in ``spec`` that names a model."""
    if spec.type == "multi":
        return [found for key, sub in spec.graders.items()
                for found in grader_models(sub, f"{param}.graders.{key}")]
    if spec.type in ("score_model", "label_model", "reward_model"):
        return [(f"{param}.model", spec.type, spec.model)]
    return []


def check_grader_models(session: Session, project: Project, settings: Settings, spec: Any, param: str) -> None:
    """Each model a job's graders name must be one the job can reach: a judge is an
    operator-configured endpoint, a base model this server serves, or the caller's own
    fine-tuned model or checkpoint; a reward model is an operator-configured name.
    (``graders.names`` already refused paths.) Another project's name reads like a
    missing one."""
    models_dir = settings.resolved_models_dir
    for field, kind, model in grader_models(spec, param):
        if kind == "reward_model":
            if model not in settings.reward_models:
                raise InvalidRequest(f"{field}: reward model '{shown_name(model)}' is not configured on this server.",
                                     param=field, code="model_not_found")
            continue
        if (model in settings.judge_endpoints
                or registered_model(models_dir, model) is not None
                or _own_model_row(session, project, model) is not None
                or _own_checkpoint(session, project, model) is not None):
            continue
        raise InvalidRequest(
            f"{field}: judge model '{shown_name(model)}' is neither a judge endpoint of this server nor a model it "
            "serves (GET /v1/models).", param=field, code="model_not_found")


def check_create_body(session: Session, project: Project, settings: Settings, body: Any) -> CheckedJob:
    """Validate a ``POST /v1/fine_tuning/jobs`` body; raise InvalidRequest naming the field."""
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    unknown = sorted(set(body) - TOP_LEVEL_FIELDS)
    if unknown:
        raise InvalidRequest(f"Unknown field '{unknown[0]}'.", param=unknown[0])
    if body.get("integrations"):
        raise InvalidRequest("integrations are not supported by this server.", param="integrations")
    if body.get("hyperparameters") is not None:
        raise InvalidRequest(
            "Top-level hyperparameters are deprecated; put them in method.<type>.hyperparameters.",
            param="hyperparameters",
        )

    n_params = _model_params(session, project, settings, body.get("model"))
    train = _owned_file(session, project, body.get("training_file"), "training_file")
    if train.line_count < settings.min_training_rows:
        raise InvalidRequest(
            f"The training file has {train.line_count} rows; at least {settings.min_training_rows} are needed.",
            param="training_file",
            code="too_few_rows",
        )
    valid = None
    if body.get("validation_file") is not None:
        valid = _owned_file(session, project, body["validation_file"], "validation_file")

    suffix = body.get("suffix")
    if suffix is not None and (not isinstance(suffix, str) or not SUFFIX.match(suffix)):
        raise InvalidRequest("suffix must be 1 to 64 letters, digits, '-' or '_'.", param="suffix")
    seed = body.get("seed")
    if seed is None:
        seed = secrets.randbelow(2**31)
    elif not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**31:
        raise InvalidRequest("seed must be an integer in [0, 2^31).", param="seed")
    metadata = body.get("metadata")
    if metadata is not None and (
        not isinstance(metadata, dict)
        or len(metadata) > 16
        or not all(
            isinstance(k, str) and len(k) <= 64 and isinstance(v, str) and len(v) <= 512 for k, v in metadata.items()
        )
    ):
        raise InvalidRequest(
            "metadata must be at most 16 string keys (64 chars) with string values (512 chars).", param="metadata"
        )

    method = body.get("method")
    if not isinstance(method, dict) or method.get("type") is None:
        raise InvalidRequest('method.type is required ("reinforcement").', param="method.type")
    if method["type"] not in METHOD_TYPES:
        raise InvalidRequest(
            f"method.type '{method['type']}' is not supported by this server; use one of {list(METHOD_TYPES)}.",
            param="method.type",
        )
    extra = sorted(set(method) - {"type", method["type"]})
    if extra:
        raise InvalidRequest(f"Unknown field 'method.{extra[0]}'.", param=f"method.{extra[0]}")
    resolved, spec = _check_reinforcement(method.get("reinforcement"), train, valid, n_params, settings.data_dir)
    check_grader_models(session, project, settings, spec, "method.reinforcement.grader")
    return CheckedJob(
        model=body["model"],
        training_file=train,
        validation_file=valid,
        suffix=suffix,
        seed=seed,
        metadata=metadata,
        method={"type": "reinforcement", "reinforcement": resolved},
    )


def _check_rows(spec: Any, files: list[tuple[str, File]], data_dir: Path, prefix: str) -> None:
    """Row-level grader checks (``graders.check_item``) on every row of the job's files:
    a case no sample could be graded by safely is a 400 now, not an error per sample."""
    if not graders.checks_items(spec):
        return
    for field, file in files:
        with open(data_dir / file.path, encoding="utf-8") as fh:
            for line_no, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    graders.check_item(spec, json.loads(line))
                except graders.GraderError as exc:
                    param = f"{prefix}.grader" + (f".{exc.param}" if exc.param else "")
                    raise InvalidRequest(f"{param}: {field} line {line_no}: {exc.message}", param=param,
                                         code="invalid_grader") from None


def _check_reinforcement(
    rl: Any, train: File, valid: File | None, n_params: int | None, data_dir: Path
) -> tuple[dict, Any]:
    """The resolved ``method.reinforcement`` and its parsed grader spec."""
    prefix = "method.reinforcement"
    if not isinstance(rl, dict):
        raise InvalidRequest(f"{prefix} must be an object with a grader.", param=prefix)
    unknown = sorted(set(rl) - REINFORCEMENT_FIELDS)
    if unknown:
        raise InvalidRequest(f"Unknown field '{prefix}.{unknown[0]}'.", param=f"{prefix}.{unknown[0]}")
    algorithm = rl.get("algorithm", "grpo")
    if algorithm not in ALGORITHMS:
        raise InvalidRequest(
            f"{prefix}.algorithm must be one of {list(ALGORITHMS)}, got {algorithm!r}.", param=f"{prefix}.algorithm"
        )
    if "grader" not in rl:
        raise InvalidRequest(f"{prefix}.grader is required.", param=f"{prefix}.grader")
    # Templates may read the keys every row of both files has.
    keys = set(train.item_keys) | {"messages"}
    if valid is not None:
        keys &= set(valid.item_keys) | {"messages"}
    try:
        spec = graders.parse_grader(rl["grader"])
        graders.validate_grader(spec, item_keys=keys)
    except graders.GraderError as exc:
        param = f"{prefix}.grader" + (f".{exc.param}" if exc.param else "")
        raise InvalidRequest(f"{param}: {exc}", param=param, code="invalid_grader") from None
    _check_rows(spec, [("training_file", train)] + ([("validation_file", valid)] if valid else []), data_dir, prefix)
    response_format = rl.get("response_format")
    try:
        parse_response_format(response_format)
    except ResponseFormatError as exc:
        param = f"{prefix}.response_format" + (f".{exc.param}" if exc.param else "")
        raise InvalidRequest(f"{param}: {exc}", param=param, code="invalid_response_format") from None
    requested = rl.get("hyperparameters") or {}
    if not isinstance(requested, dict):
        raise InvalidRequest(f"{prefix}.hyperparameters must be an object.", param=f"{prefix}.hyperparameters")
    try:
        hyper = resolve_hyperparameters("reinforcement", algorithm, requested, train.line_count, n_params)
    except HyperparameterError as exc:
        raise InvalidRequest(exc.message, param=exc.param, code="invalid_hyperparameters") from None
    return {
        "grader": rl["grader"],
        "response_format": response_format,
        "hyperparameters": hyper,
        "algorithm": algorithm,
    }, spec

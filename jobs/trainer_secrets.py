"""The trainer spec's secrets: what stays out of ``spec.json`` and how it reaches the child.

``spec.json`` lies in the job directory, next to checkpoints that are downloaded and
folders that get copied and backed up; judge API keys and the service's internal
token must not lie there. The worker takes them out of the grader context before it
writes the spec (``split_secrets``) and hands them to the trainer child in one
environment variable, ``RFT_TRAINER_SECRETS``. The child pops that variable as it
starts, so nothing it spawns inherits it, and puts the keys back into its in-memory
context (``merge_secrets``). Neither side logs the variable or writes it anywhere.

Torch-free and database-free: the worker and the trainer child both import it.
"""

from __future__ import annotations

from collections.abc import MutableMapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from graders import GraderContext

SECRETS_ENV = "RFT_TRAINER_SECRETS"


class TrainerSecrets(BaseModel):
    """The grader context's secrets: the internal key and each judge endpoint's API key."""

    model_config = ConfigDict(extra="forbid")

    internal_key: str = Field(default="", repr=False)
    judge_api_keys: dict[str, str] = Field(default_factory=dict, repr=False)


def split_secrets(context: dict) -> tuple[dict, TrainerSecrets]:
    """Split a grader context (the plain dict engine processes receive) into what may be
    written to ``spec.json`` and the secrets, which may not.

    The public half validates as a ``GraderContext`` with empty keys.
    """
    ctx = GraderContext.model_validate(context)
    secrets = TrainerSecrets(
        internal_key=ctx.internal_key,
        judge_api_keys={name: judge.api_key for name, judge in ctx.judges.items() if judge.api_key},
    )
    public = ctx.model_dump(exclude={"internal_key": True, "judges": {"__all__": {"api_key"}}})
    return public, secrets


def merge_secrets(public: dict, secrets: TrainerSecrets) -> GraderContext:
    """The grader context the trainer grades with: ``public`` (from ``spec.json``) with the
    secrets put back. The inverse of ``split_secrets``.

    Only the public half is validated, so a validation error never quotes a key.
    """
    ctx = GraderContext.model_validate(public)
    unknown = sorted(set(secrets.judge_api_keys) - set(ctx.judges))
    if unknown:
        raise ValueError(f"{SECRETS_ENV} holds keys for judges the spec does not name: {', '.join(unknown)}")
    judges = {
        name: judge.model_copy(update={"api_key": secrets.judge_api_keys.get(name, "")})
        for name, judge in ctx.judges.items()
    }
    return ctx.model_copy(update={"internal_key": secrets.internal_key, "judges": judges})


def secrets_env(secrets: TrainerSecrets) -> dict[str, str]:
    """The environment entry that hands ``secrets`` to the trainer child."""
    return {SECRETS_ENV: secrets.model_dump_json()}


def pop_secrets(environ: MutableMapping[str, str]) -> TrainerSecrets:
    """Read the secrets the worker handed over and remove them from ``environ`` (the
    child passes ``os.environ``), so no process the child starts inherits them.

    No variable means no secrets (a spec written by hand, a test, the demo).
    """
    raw = environ.pop(SECRETS_ENV, None)
    if raw is None:
        return TrainerSecrets()
    try:
        return TrainerSecrets.model_validate_json(raw)
    except ValidationError:
        # Not chained: the validation error would quote the value.
        raise ValueError(f"{SECRETS_ENV} is not a JSON object of trainer secrets") from None

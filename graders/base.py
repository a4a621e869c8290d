"""Types shared by every grader: the result, the operator context and the two errors.

Two kinds of failure exist and they travel differently:

- ``GraderError`` is a problem with the grader *definition* (bad field, unknown template
  variable, unparsable formula). ``parse_grader`` / ``validate_grader`` raise it and the
  API turns it into a 400 naming ``param``.
- ``SampleError`` is a problem grading *one sample* (output is not JSON, user code raised,
  the judge answered garbage). Grade functions raise it; ``graders.grade`` catches it and
  returns a ``GradeResult`` with reward 0, the OpenAI error flag set and a short detail,
  so a failing sample is recorded and counted, never silently skipped.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field

# OpenAI's grader error flags (fine_tuning.alpha GraderRunResponse.metadata.errors).
ERROR_FLAGS: tuple[str, ...] = (
    "formula_parse_error",
    "invalid_variable_error",
    "model_grader_parse_error",
    "model_grader_refusal_error",
    "model_grader_server_error",
    "other_error",
    "python_grader_runtime_error",
    "python_grader_server_error",
    "sample_parse_error",
    "truncated_observation_error",
    "unresponsive_reward_error",
)

# Details are kept short: they end up in job events and API responses.
MAX_DETAIL_CHARS = 500


class GraderError(Exception):
    """The grader definition is invalid; ``param`` names the offending field."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param

    def __str__(self) -> str:
        return f"{self.message} (param: {self.param})" if self.param else self.message


class SampleError(Exception):
    """Grading one sample failed; ``flag`` is one of ``ERROR_FLAGS``."""

    def __init__(self, flag: str, detail: str, token_usage: dict | None = None):
        if flag not in ERROR_FLAGS:
            raise ValueError(f"unknown grader error flag {flag!r}")
        super().__init__(detail)
        self.flag = flag
        self.detail = detail
        # Tokens a judge spent before its answer proved unusable still count.
        self.token_usage = token_usage or {}


def empty_errors() -> dict[str, bool]:
    """All OpenAI error flags, all false (a fresh dict each call)."""
    return dict.fromkeys(ERROR_FLAGS, False)


def short(text: str) -> str:
    """Trim an error detail to ``MAX_DETAIL_CHARS``."""
    text = str(text)
    return text if len(text) <= MAX_DETAIL_CHARS else text[: MAX_DETAIL_CHARS - 3] + "..."


class GradeResult(BaseModel):
    """Outcome of grading one sample.

    ``errors`` always carries every OpenAI flag; at most the flags of the failing
    grader(s) are true. When any flag is true, ``reward`` is 0 unless a ``multi``
    grader combined a failing sub-grader's 0 with healthy ones.
    """

    reward: float = 0.0
    sub_rewards: dict[str, float] = Field(default_factory=dict)
    errors: dict[str, bool] = Field(default_factory=empty_errors)
    error_detail: str | None = None
    execution_time: float = 0.0
    token_usage: dict[str, dict[str, int]] = Field(default_factory=dict)

    @property
    def failed(self) -> bool:
        """True when any error flag is set."""
        return any(self.errors.values())

    @classmethod
    def failure(cls, flag: str, detail: str, token_usage: dict | None = None) -> GradeResult:
        """A zero reward with ``flag`` set and a short detail."""
        errors = empty_errors()
        errors[flag] = True
        return cls(reward=0.0, errors=errors, error_detail=short(detail), token_usage=token_usage or {})


def finite_in_range(value: object, lo: float, hi: float, what: str) -> float:
    """Coerce a grader's raw output to a finite float clamped to ``[lo, hi]``.

    Only real numbers are accepted (bools and numeric strings are not: OpenAI marks any
    non-float result invalid); NaN and infinities raise ``SampleError``.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SampleError("python_grader_runtime_error", f"{what} returned {type(value).__name__}, expected a float")
    value = float(value)
    if not math.isfinite(value):
        raise SampleError("python_grader_runtime_error", f"{what} returned a non-finite value ({value})")
    return min(max(value, lo), hi)


class JudgeEndpoint(BaseModel):
    """An operator-configured OpenAI-compatible endpoint a judge may name.

    ``api_key`` is never echoed back by the API (it lives only in the context).
    """

    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(description="OpenAI-style base URL, e.g. https://host/v1")
    api_key: str = Field(default="", repr=False)
    model: str | None = Field(default=None, description="model name sent upstream; defaults to the name")
    timeout_s: float = Field(default=60.0, gt=0)


class GraderContext(BaseModel):
    """What the operator configured for grading (built by ``service`` from its settings,
    shipped to the trainer inside ``spec.json`` as a plain dict)."""

    model_config = ConfigDict(extra="forbid")

    # Sandbox for python / code_exec.
    sandbox_unsafe: bool = Field(
        default=False,
        description="run user code without the namespace sandbox when it cannot be set up "
        "(development only; never on a shared server)",
    )
    sandbox_wall_timeout_s: float = Field(default=20.0, gt=0, description="per sample")
    sandbox_cpu_seconds: int = Field(default=10, ge=1, description="per sample")
    sandbox_memory_mb: int = Field(default=1024, ge=64)
    sandbox_max_processes: int = Field(default=32, ge=1)
    sandbox_max_open_files: int = Field(default=64, ge=16)
    sandbox_max_file_mb: int = Field(default=64, ge=1)
    sandbox_workers: int = Field(default=2, ge=1, le=64, description="warm sandboxes per batch")
    sandbox_uid_base: int = Field(
        default=61000, ge=1000, description="first uid/gid of the range sandboxes run their samples under"
    )
    sandbox_uid_count: int = Field(
        default=4096, ge=1, le=1_000_000,
        description="size of that range: each live sandbox on the host leases a uid of its own",
    )
    sandbox_cgroup_dir: str | None = Field(
        default=None,
        description="a delegated cgroup v2 directory for sandbox cgroups (default: this process's own cgroup)",
    )

    # LLM judges (score_model / label_model).
    judges: dict[str, JudgeEndpoint] = Field(default_factory=dict)
    service_base_url: str | None = Field(
        default=None, description="this service's own OpenAI-style base URL for judges naming a served model"
    )
    internal_key: str = Field(default="", repr=False)
    judge_max_concurrency: int = Field(default=8, ge=1)
    judge_max_retries: int = Field(default=2, ge=0, le=10)
    judge_timeout_s: float = Field(default=60.0, gt=0)

    # endpoint graders.
    endpoint_allowlist: list[str] = Field(
        default_factory=list, description="hosts or CIDRs an endpoint grader may reach even if private"
    )
    endpoint_timeout_s: float = Field(default=30.0, gt=0)
    endpoint_max_retries: int = Field(default=3, ge=0, le=10)

    # reward_model: operator-configured name -> local model folder.
    reward_models: dict[str, str] = Field(default_factory=dict)

    # grade_batch: threads used for graders that wait (HTTP, sandbox).
    batch_concurrency: int = Field(default=8, ge=1, le=256)

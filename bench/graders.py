"""Grader throughput: grades per second for each in-process type, and the sandboxed
``python`` grader's warm pool against one sandbox process per sample.

    .venv/bin/python bench/graders.py [--seconds 2.0] [--python-samples 600]

In-process types are graded one sample at a time with ``graders.grade`` on one thread
(one core), over varied samples so no cache flatters them. ``python`` runs through
``graders.grade_batch`` (a pool of ``sandbox_workers`` warm sandboxes, each grading many
samples) and through ``graders.grade`` (a fresh sandbox per sample), in the same run.
Targets (issue 3): string_check and json_match >= 20,000 grades/s on one core; python
>= 200 grades/s on 2 cores with the full sandbox. Finishes in about a minute.
"""

# ruff: noqa: T201  (a benchmark prints its report)
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from graders import GraderContext, grade, grade_batch, parse_grader  # noqa: E402
from graders.sandbox import sandbox_status  # noqa: E402

WORDS = "the cat sat on a mat while dogs ran in the park under blue skies today".split()

REFERENCE = {
    "university": "University of California Berkeley",
    "programming_languages": ["python", "c++", "java"],
    "city": "Los Angeles",
    "state": "California",
}

SPECS = {
    "string_check": {
        "type": "string_check",
        "name": "s",
        "input": "{{sample.output_text}}",
        "reference": "{{item.answer}}",
        "operation": "ilike",
    },
    "text_similarity/fuzzy_match": {
        "type": "text_similarity",
        "name": "t",
        "input": "{{sample.output_text}}",
        "reference": "{{item.answer}}",
        "evaluation_metric": "fuzzy_match",
    },
    "text_similarity/bleu": {
        "type": "text_similarity",
        "name": "t",
        "input": "{{sample.output_text}}",
        "reference": "{{item.answer}}",
        "evaluation_metric": "bleu",
    },
    "text_similarity/rouge_l": {
        "type": "text_similarity",
        "name": "t",
        "input": "{{sample.output_text}}",
        "reference": "{{item.answer}}",
        "evaluation_metric": "rouge_l",
    },
    "text_similarity/rouge_2": {
        "type": "text_similarity",
        "name": "t",
        "input": "{{sample.output_text}}",
        "reference": "{{item.answer}}",
        "evaluation_metric": "rouge_2",
    },
    "json_match": {
        "type": "json_match",
        "name": "j",
        "reference": "{{item.reference}}",
        "fields": {
            "university": {"mode": "fuzzy", "weight": 2},
            "programming_languages": {"mode": "set"},
        },
    },
    "math_match": {"type": "math_match", "name": "m"},
}
SPECS["multi"] = {
    "type": "multi",
    "name": "combo",
    "graders": {"exact": SPECS["string_check"], "fields": SPECS["json_match"]},
    "calculate_output": "0.3 * exact + 0.7 * fields",
}

PYTHON_SOURCE = """
def grade(sample, item):
    text = sample["output_text"]
    return 1.0 if item["answer"] in text else len(set(text.split())) / 100
"""


def _sentence(rng: random.Random, n: int = 12) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _pairs(kind: str, n: int, rng: random.Random) -> list[tuple[dict, dict]]:
    """``n`` (sample, item) pairs suited to ``kind``; about half of them match."""
    out = []
    for i in range(n):
        if kind in ("json_match", "multi"):
            answer = dict(REFERENCE)
            if i % 2:
                answer["city"] = rng.choice(["San Francisco", "los angeles", "Berkeley"])
                answer["programming_languages"] = rng.sample(["python", "c++", "java", "go"], 2)
            text = json.dumps(answer)
            out.append(({"output_text": text, "output_json": answer}, {"reference": REFERENCE, "answer": text}))
        elif kind == "math_match":
            a, b = rng.randint(1, 99), rng.randint(1, 99)
            shown = a + b if i % 2 else a + b + 1
            out.append(({"output_text": f"{a} + {b} = \\boxed{{{shown}}}"}, {"answer": str(a + b)}))
        else:
            ref = _sentence(rng)
            text = ref if i % 2 else _sentence(rng)
            out.append(({"output_text": text, "output_json": None}, {"answer": ref}))
    return out


def bench_in_process(name: str, ctx: GraderContext, seconds: float) -> float:
    """Grades/s of ``graders.grade`` for one spec, single thread, for about ``seconds``."""
    kind = name.split("/")[0]
    spec = parse_grader(SPECS[name])
    pairs = _pairs(kind, 512, random.Random(7))
    for sample, item in pairs[:16]:  # imports, caches, lazy scorers
        grade(spec, sample, item, ctx)
    count, start = 0, time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        for sample, item in pairs:
            res = grade(spec, sample, item, ctx)
            if res.failed:
                raise SystemExit(f"{name}: a benchmark sample failed: {res.error_detail}")
        count += len(pairs)
    return count / (time.perf_counter() - start)


def bench_python(ctx: GraderContext, n_pool: int, n_isolated: int) -> tuple[float, float]:
    """(warm pool grades/s, one-sandbox-per-sample grades/s) for the python grader."""
    spec = parse_grader({"type": "python", "name": "py", "source": PYTHON_SOURCE})
    rng = random.Random(11)
    pairs = _pairs("string_check", n_pool, rng)
    samples, items = [p[0] for p in pairs], [p[1] for p in pairs]
    grade_batch(spec, samples[:4], items[:4], ctx)  # probe the sandbox once
    start = time.perf_counter()
    results = grade_batch(spec, samples, items, ctx)
    pool_rate = n_pool / (time.perf_counter() - start)
    failed = [r.error_detail for r in results if r.failed]
    if failed:
        raise SystemExit(f"python pool: {len(failed)} samples failed, e.g. {failed[0]}")
    start = time.perf_counter()
    for sample, item in zip(samples[:n_isolated], items[:n_isolated], strict=True):
        res = grade(spec, sample, item, ctx)
        if res.failed:
            raise SystemExit(f"python isolated: {res.error_detail}")
    isolated_rate = n_isolated / (time.perf_counter() - start)
    return pool_rate, isolated_rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=2.0, help="time per in-process grader type")
    parser.add_argument("--python-samples", type=int, default=600, help="samples for the warm pool")
    parser.add_argument("--isolated-samples", type=int, default=40, help="samples for one-process-per-sample")
    args = parser.parse_args()

    cores = len(os.sched_getaffinity(0))
    ctx = GraderContext(sandbox_workers=max(1, cores))
    print(f"graders benchmark: {cores} CPU cores available, in-process types on 1 thread")
    print(f"{'grader':32} {'grades/s':>12}  target")
    targets = {"string_check": 20_000, "json_match": 20_000}
    for name in SPECS:
        rate = bench_in_process(name, ctx, args.seconds)
        target = targets.get(name)
        mark = "" if target is None else f">= {target:,} {'ok' if rate >= target else 'MISSED'}"
        print(f"{name:32} {rate:12,.0f}  {mark}", flush=True)

    ok, reason = sandbox_status()
    if not ok:
        print(f"python: sandbox unavailable here ({reason}); not measured")
        return 0
    pool, isolated = bench_python(ctx, args.python_samples, args.isolated_samples)
    print(
        f"{'python (warm pool, ' + str(ctx.sandbox_workers) + ' sandboxes)':32} {pool:12,.0f}  "
        f">= 200 {'ok' if pool >= 200 else 'MISSED'}"
    )
    print(f"{'python (1 sandbox per sample)':32} {isolated:12,.1f}")
    print(f"python warm pool / one-per-sample: {pool / isolated:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

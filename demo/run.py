"""The demo: a real reinforcement fine-tuning job, end to end, on a tiny local model.

Run it with ``make demo``. It starts ``rft serve`` on loopback, builds the tiny demo base
model, uploads the demo dataset, tries the grader on one sample, runs the RFT job with a
progress bar, compares held-out reward before and after, asks the tuned model a
held-out question, downloads the model and loads it with transformers to show the same
greedy answer, then stops everything it started.

Everything the demo does as a client goes through the official ``openai`` package, so
this file doubles as an example of using rft from Python.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from openai import OpenAI
from tqdm import tqdm

from jobs.demo_job import DEMO_HYPERPARAMETERS

ROOT = Path(__file__).resolve().parent.parent
DEMO_DATA = ROOT / "jobs" / "demo_data"
MODEL = "rft-demo-tiny"
MAX_TOKENS = 64


def say(text: str) -> None:
    print(text, flush=True)  # noqa: T201 - the demo talks to a person


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rft(*args: str) -> str:
    """Run the ``rft`` CLI and return what it printed."""
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def start_service(data_dir: Path, port: int) -> subprocess.Popen:
    """Start ``rft serve`` (API, worker, inference) and wait for /healthz."""
    log = open(data_dir / "serve.log", "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--port", str(port), "--data-dir", str(data_dir)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"rft serve exited early; see {data_dir / 'serve.log'}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise SystemExit("rft serve did not start in 2 minutes")


def rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (DEMO_DATA / name).read_text().splitlines() if line.strip()]


def chat_answer(client: OpenAI, model: str, messages: list[dict]) -> str:
    reply = client.chat.completions.create(model=model, messages=messages, temperature=0, max_tokens=MAX_TOKENS)
    return reply.choices[0].message.content or ""


def held_out_reward(client: OpenAI, model: str, grader: dict, test_rows: list[dict]) -> tuple[float, float]:
    """Mean greedy reward on the held-out rows and its standard error, all through the API."""

    def one(row: dict) -> float:
        answer = chat_answer(client, model, row["messages"])
        item = {k: v for k, v in row.items() if k != "messages"}
        return float(client.fine_tuning.alpha.graders.run(grader=grader, model_sample=answer, item=item).reward)

    with ThreadPoolExecutor(max_workers=8) as pool:  # the server batches concurrent requests
        scores = list(pool.map(one, test_rows))
    mean = sum(scores) / len(scores)
    var = sum((s - mean) ** 2 for s in scores) / max(1, len(scores) - 1)
    return mean, math.sqrt(var / len(scores))


def follow_job(client: OpenAI, job_id: str):
    """Poll the job, drawing a progress bar from its metrics events."""
    bar = tqdm(total=1, unit="step", desc="training", dynamic_ncols=True)
    seen: set[str] = set()
    valid = None
    while True:
        job = client.fine_tuning.jobs.retrieve(job_id)
        events = list(client.fine_tuning.jobs.list_events(job_id, limit=50))
        for event in reversed(events):
            if event.id in seen:
                continue
            seen.add(event.id)
            if event.type == "metrics" and event.data:
                data = dict(event.data)
                bar.total = data.get("total_steps") or bar.total
                bar.n = data.get("step") or bar.n
                if data.get("valid_reward_mean") is not None:
                    valid = data["valid_reward_mean"]
                postfix = {}
                if data.get("train_reward_mean") is not None:
                    postfix["reward"] = f"{data['train_reward_mean']:.3f}"
                if valid is not None:
                    postfix["valid"] = f"{valid:.3f}"
                bar.set_postfix(postfix)
                bar.refresh()
            elif event.type == "message":
                bar.write(f"  [{event.level}] {event.message}")
        if job.status in ("succeeded", "failed", "cancelled"):
            bar.close()
            return job
        time.sleep(2)


def download_and_load(base_url: str, key: str, model: str, messages: list[dict]) -> str:
    """Download the tuned model as a tar, load it with transformers, answer greedily."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = Path(tempfile.mkdtemp(prefix="rft-demo-download-"))
    with httpx.stream("GET", f"{base_url}/models/{model}/content",
                      headers={"Authorization": f"Bearer {key}"}, timeout=300) as res:
        res.raise_for_status()
        data = res.read()
        expected = res.headers.get("x-content-sha256")
    actual = hashlib.sha256(data).hexdigest()
    say(f"   downloaded {len(data) / 1e6:.1f} MB; sha256 header {'matches' if actual == expected else 'DIFFERS'}")
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(target, filter="data")
    folder = next(p.parent for p in target.rglob("config.json") if p.parent.name != "adapter")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    lm = AutoModelForCausalLM.from_pretrained(folder)
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    out = lm.generate(**inputs, max_new_tokens=MAX_TOKENS, do_sample=False)
    return tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT / "rft-data")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    data_dir = args.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    os.environ["HF_HUB_OFFLINE"] = "1"
    started = time.monotonic()

    say("1. Building the tiny demo base model (cached after the first run)...")
    subprocess.run([sys.executable, "-m", "service.cli", "demo-model", "--data-dir", str(data_dir)], check=True)

    port = args.port or free_port()
    say(f"2. Starting rft serve on 127.0.0.1:{port} (API, worker, inference)...")
    server = start_service(data_dir, port)
    try:
        key = rft("keys", "create", "--project", "demo", "--data-dir", str(data_dir))
        base_url = f"http://127.0.0.1:{port}/v1"
        client = OpenAI(base_url=base_url, api_key=key, timeout=600)
        grader = json.loads((DEMO_DATA / "grader.json").read_text())
        hyper = DEMO_HYPERPARAMETERS
        test_rows = rows("test.jsonl")

        say("3. Uploading the demo dataset...")
        with open(DEMO_DATA / "train.jsonl", "rb") as fh:
            train = client.files.create(file=fh, purpose="fine-tune")
        with open(DEMO_DATA / "valid.jsonl", "rb") as fh:
            valid = client.files.create(file=fh, purpose="fine-tune")
        say(f"   train {train.id} ({train.bytes} bytes), valid {valid.id} ({valid.bytes} bytes)")

        row = rows("train.jsonl")[0]
        item = {k: v for k, v in row.items() if k != "messages"}
        perfect = json.dumps(item["reference"])
        tried = client.fine_tuning.alpha.graders.run(grader=grader, model_sample=perfect, item=item)
        say(f"4. Grader check on one sample: the reference answer {perfect} scores {tried.reward:.2f}")

        say(f"5. Held-out reward of the base model ({len(test_rows)} questions, greedy)...")
        before, before_se = held_out_reward(client, MODEL, grader, test_rows)
        say(f"   before: {before:.3f} ± {before_se:.3f}")

        say("6. Starting the reinforcement fine-tuning job (GRPO)...")
        job = client.fine_tuning.jobs.create(
            model=MODEL,
            training_file=train.id,
            validation_file=valid.id,
            suffix="demo",
            seed=0,
            method={"type": "reinforcement", "reinforcement": {"grader": grader, "hyperparameters": hyper}},
        )
        job = follow_job(client, job.id)
        if job.status != "succeeded":
            say(f"The job ended {job.status}: {job.error}")
            return 1
        checkpoints = list(client.fine_tuning.jobs.checkpoints.list(job.id))
        say(f"   fine-tuned model: {job.fine_tuned_model} ({len(checkpoints)} checkpoints kept)")

        say("7. Held-out reward of the tuned model...")
        after, after_se = held_out_reward(client, job.fine_tuned_model, grader, test_rows)
        say(f"   before: {before:.3f} ± {before_se:.3f}   after: {after:.3f} ± {after_se:.3f}")

        question = test_rows[0]["messages"]
        served = chat_answer(client, job.fine_tuned_model, question)
        say(f"8. Held-out question: {question[-1]['content']}")
        say(f"   served answer:      {served}")
        local = download_and_load(base_url, key, job.fine_tuned_model, question)
        say(f"9. The downloaded model, loaded with transformers, answers: {local}")
        say(f"   same greedy answer as the service: {'yes' if local.strip() == served.strip() else 'no'}")
        say(f"Done in {time.monotonic() - started:.0f} s.")
        return 0
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()


if __name__ == "__main__":
    sys.exit(main())

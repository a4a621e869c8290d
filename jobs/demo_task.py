"""The demo task: pull three fields out of a short order sentence into JSON.

The skill is a rule (copy the buyer's name and the city into a fixed JSON shape),
not a fact to memorise: names and cities are made-up words drawn fresh for every row,
sentences come in several phrasings with the fields in different orders. Held-out rows
therefore test the rule, and a model that merely memorises the training rows gains
nothing on them.

The sentence also carries a quantity and the goods as distractors.

What the RL job teaches: the warm-up data (``warmup_answer_text``) is noisy the way
scraped data is, naming the city field ``"town"`` in ``TOWN_KEY_SHARE`` of its rows.
The demo grader wants the schema's ``"city"`` key, so the base model loses that field
on about half its answers; the schema is one rule shared by every row, which GRPO finds
from the grader's reward alone and which carries over to held-out rows.

``python -m jobs.demo_task`` regenerates ``jobs/demo_data/*.jsonl`` (seeded, so the
files in the repo are reproducible). Torch-free.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

DATA_DIR = Path(__file__).parent / "demo_data"

SPLITS = {"train": (40, 1), "valid": (32, 2), "test": (200, 3)}  # rows, seed
WARMUP_SEED = 1000  # warm-up rows come from their own random stream
TOWN_KEY_SHARE = 0.5

_ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "st", "tr", "kl"]
_VOWELS = ["a", "e", "i", "o", "u"]
_GOODS = ["lamps", "chairs", "books", "boxes", "cups", "tables", "pens", "bikes"]
_TEMPLATES = [
    "{name} ordered {qty} {goods} for {city}.",
    "Ship {qty} {goods} to {city} for {name}.",
    "To {city}: {qty} {goods}, from {name}.",
    "{name} in {city} wants {qty} {goods}.",
    "Send {name} {qty} {goods} in {city}.",
    "{qty} {goods} to {city}, buyer {name}.",
]


def _word(rng: random.Random) -> str:
    syllables = rng.randint(2, 3)
    return "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables)).capitalize()


def make_row(rng: random.Random) -> dict:
    """One dataset row: the sentence as the user message, the answer as ``reference``."""
    name, city = _word(rng), _word(rng)
    while city == name:
        city = _word(rng)
    qty = rng.randint(2, 99)
    sentence = rng.choice(_TEMPLATES).format(name=name, city=city, qty=qty, goods=rng.choice(_GOODS))
    return {"messages": [{"role": "user", "content": sentence}],
            "reference": {"name": name, "city": city}}


def answer_text(row: dict) -> str:
    """The target completion for a row (the format the grader parses)."""
    return json.dumps(row["reference"])


def warmup_answer_text(row: dict, rng: random.Random) -> str:
    """The warm-up target: the answer, with the city under a ``"town"`` key in some rows."""
    ref = row["reference"]
    if rng.random() < TOWN_KEY_SHARE:
        return json.dumps({"name": ref["name"], "town": ref["city"]})
    return json.dumps(ref)


def make_rows(n: int, seed: int) -> list[dict]:
    """``n`` rows from the generator seeded with ``seed``."""
    rng = random.Random(seed)
    return [make_row(rng) for _ in range(n)]


def main() -> None:
    """Write the train / valid / test files."""
    DATA_DIR.mkdir(exist_ok=True)
    for split, (n, seed) in SPLITS.items():
        rows = make_rows(n, seed)
        with open(DATA_DIR / f"{split}.jsonl", "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()

"""Dataset rows -> TRL prompt datasets.

A row is ``{"messages": [...], <reference fields>...}``. The prompt is the row's
messages (conversational format: TRL renders it through the model's chat template with
the generation prompt appended); a trailing assistant message, if a row has one, is a
reference answer and is left out of the prompt. The full row travels to the grader as
its ``item``; the TRL dataset carries only the row's index, because rows may have
different reference keys and Arrow wants one schema.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from datasets import Dataset


def load_rows(path: str | Path) -> list[dict[str, Any]]:
    """Read a JSONL dataset file (blank lines skipped)."""
    rows = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                rows.append(json.loads(line))
    return rows


def prompt_messages(row: dict[str, Any]) -> list[dict[str, str]]:
    """The messages the model sees: the row's messages minus a trailing assistant turn."""
    messages = [{"role": m["role"], "content": m["content"]} for m in row["messages"]]
    if messages and messages[-1]["role"] == "assistant":
        messages = messages[:-1]
    return messages


def to_prompt_dataset(rows: list[dict[str, Any]]) -> Dataset:
    """A TRL dataset with ``prompt`` (messages) and ``row_index`` columns."""
    return Dataset.from_dict({
        "prompt": [prompt_messages(r) for r in rows],
        "row_index": list(range(len(rows))),
    })


def render_prompts(tokenizer, rows: list[dict[str, Any]]) -> list[str]:
    """Prompt texts through the chat template, as generation (and TRL) sees them."""
    return [tokenizer.apply_chat_template(prompt_messages(r), tokenize=False, add_generation_prompt=True)
            for r in rows]

"""Per-row token choice for a batched ``generate``: each row keeps its own temperature,
top_p, top_k, seed and JSON constraint.

``generate`` runs with ``do_sample=False``; this processor runs last and leaves exactly
one finite score per row, the token it chose, so generate's argmax takes that token.
Sampling uses the Gumbel-max trick: argmax(logits / T + Gumbel noise) is a draw from
softmax(logits / T). With the noise drawn from a per-row generator, a seeded row draws
the same tokens whatever else shares its batch, and a JSON row can walk the candidates
in that same order and take the first one the grammar allows, which is an exact draw
from the distribution restricted to the allowed tokens.
"""

from __future__ import annotations

import random

import torch
from transformers import LogitsProcessor

from jobs.structured.json_prefix import JsonPrefix

from .text import RowText
from .work import RowParams


class RowSampler(LogitsProcessor):
    """Chooses each row's next token; see the module docstring."""

    def __init__(self, rows: list[RowParams], texts: list[RowText], token_text: list[str],
                 eos_ids: frozenset[int], special_ids: frozenset[int], device: torch.device):
        self._rows = rows
        self._texts = texts
        self._token_text = token_text
        self._eos = min(eos_ids)
        self._special_ids = special_ids
        self._temps = torch.tensor([r.temperature or 1.0 for r in rows], device=device)[:, None]
        self._sampled = [i for i, r in enumerate(rows) if not r.greedy]
        self._generators = {}
        for i in self._sampled:
            gen = torch.Generator(device=device)
            # Unseeded rows still get their own generator, seeded at random, so that
            # a seeded neighbour's stream never depends on them.
            gen.manual_seed(rows[i].seed if rows[i].seed is not None else random.getrandbits(63))
            self._generators[i] = gen
        self._json = {i: JsonPrefix() for i, r in enumerate(rows) if r.json_object}

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        keys = scores / self._temps
        for i in self._sampled:
            if self._texts[i].done:
                continue
            self._cut(keys[i], self._rows[i])
            uniform = torch.rand(keys.shape[1], generator=self._generators[i], device=keys.device)
            keys[i] += -torch.log(-torch.log(uniform.clamp_(min=1e-20)))
        choice = keys.argmax(dim=-1)
        for i, state in self._json.items():
            if not self._texts[i].done:
                choice[i] = self._json_choice(i, state, keys[i])
        out = torch.full_like(scores, float("-inf"))
        out.scatter_(1, choice[:, None], 0.0)
        return out

    @staticmethod
    def _cut(keys: torch.Tensor, row: RowParams) -> None:
        """Mask tokens outside top_k and outside the top_p nucleus, in place."""
        if 0 < row.top_k < keys.numel():
            kth = torch.topk(keys, row.top_k).values[-1]
            keys[keys < kth] = float("-inf")
        if row.top_p < 1.0:
            sorted_keys, order = torch.sort(keys, descending=True)
            probs = torch.softmax(sorted_keys, dim=-1)
            # Drop a token when the tokens ranked above it already cover top_p.
            drop = (probs.cumsum(dim=-1) - probs) >= row.top_p
            keys[order[drop]] = float("-inf")

    def _json_choice(self, i: int, state: JsonPrefix, keys: torch.Tensor) -> int:
        """First candidate (best key first) that keeps the text a JSON-object prefix."""
        if state.complete:
            return self._eos
        order = torch.argsort(keys, descending=True)
        allowed = int(torch.isfinite(keys).sum())
        for token in order[:allowed].tolist():
            if token in self._special_ids:
                continue
            nxt = state.accepts(self._token_text[token])
            if nxt is not None:
                self._json[i] = nxt
                return token
        # No allowed token left (all masked by top_p / top_k): end the row; the client
        # sees finish_reason "stop" with the JSON so far.
        return self._eos

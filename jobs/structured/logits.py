"""Constrained sampling for ``generate``: mask every token the recogniser refuses.

``ConstrainedSampling(tokenizer, new_state, stop_ids).processors()`` gives a fresh
``LogitsProcessorList`` for one ``generate`` call. At each step its processor sets the
score of every token that would break the row's recogniser (``JsonPrefix`` or
``SchemaPrefix``) to -inf, before generate's own temperature / top-k / top-p and its
sampler run. The token generate then draws is an exact draw from the model's
distribution restricted to the allowed tokens, and it is the token that stays in the
sequence: nothing is rewritten after the fact, so a trainer's log-probs are those of the
tokens sampled. Special tokens (stop tokens included) are never allowed inside the
object; once it is complete only the tokenizer's EOS is. If no token can continue a
row (a tokenizer that cannot spell what the schema needs), EOS is allowed, and the row
ends as a truncated prefix, as it does at the token limit.

Computing a mask means trying the vocabulary against the state, so masks are cached by
the state's ``key()`` (states recur: every string, every key, every nesting level is
met again in each sample). A miss costs little: tokens are grouped by first character
and only groups whose first character the state accepts are tried in full; inside a
free string (``free_text``) every token made only of ordinary characters is allowed
without trying it.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from typing import Protocol

import torch
from transformers import LogitsProcessor, LogitsProcessorList

log = logging.getLogger(__name__)

# Device memory the mask cache may use (a mask is one byte per vocabulary entry).
CACHE_BYTES = 64 << 20


class Recogniser(Protocol):
    """What ``JsonPrefix`` and ``SchemaPrefix`` both offer."""

    @property
    def complete(self) -> bool: ...

    @property
    def free_text(self) -> bool: ...

    def key(self) -> Hashable: ...

    def copy(self) -> Recogniser: ...

    def feed(self, ch: str) -> bool: ...

    def accepts(self, text: str) -> Recogniser | None: ...


def token_texts(tokenizer, width: int) -> list[str]:
    """The text each token id adds when it follows other text ("" for special tokens and
    ids past the tokenizer, e.g. padded embedding rows).

    Each id is decoded after an anchor token and the anchor's text is cut off:
    SentencePiece tokenizers drop a token's leading space when it is decoded alone, but
    keep it mid-sequence, where a completion's tokens are.
    """
    size = min(len(tokenizer), width)
    anchor = tokenizer.encode("a", add_special_tokens=False)
    base = tokenizer.decode(anchor)
    decoded = tokenizer.batch_decode([[*anchor, i] for i in range(size)], skip_special_tokens=True)
    texts = []
    odd = 0
    for text in decoded:
        if text.startswith(base):
            texts.append(text[len(base):])
        else:  # decoding merged the anchor with the token: never allow it
            odd += 1
            texts.append("")
    if odd:
        log.warning("%d tokens do not decode after an anchor token; constrained sampling never picks them", odd)
    return texts + [""] * (width - size)


def _plain(text: str) -> bool:
    return all(ch not in '"\\' and ord(ch) >= 0x20 for ch in text)


class TokenMasks:
    """Allowed-token masks over one vocabulary, by recogniser state, LRU-cached."""

    def __init__(self, texts: list[str], banned: set[int], eos_id: int, device: torch.device):
        self.texts = texts
        self.eos_id = eos_id
        self.device = device
        width = len(texts)
        self._by_first: dict[str, list[int]] = {}
        self._unplain_by_first: dict[str, list[int]] = {}
        plain = torch.zeros(width, dtype=torch.bool)
        for i, text in enumerate(texts):
            if i in banned or not text:
                continue
            self._by_first.setdefault(text[0], []).append(i)
            if _plain(text):
                plain[i] = True
            else:
                self._unplain_by_first.setdefault(text[0], []).append(i)
        self._plain = plain
        eos_only = torch.zeros(width, dtype=torch.bool)
        eos_only[eos_id] = True
        self._eos_only = eos_only.to(device)
        self._cache: OrderedDict[Hashable, torch.Tensor] = OrderedDict()
        self._cache_size = max(16, CACHE_BYTES // max(width, 1))

    def allowed(self, state: Recogniser) -> torch.Tensor:
        """Bool mask (on the device) of the tokens that may come next."""
        if state.complete:
            return self._eos_only
        key = state.key()
        mask = self._cache.get(key)
        if mask is not None:
            self._cache.move_to_end(key)
            return mask
        mask = self._compute(state).to(self.device)
        self._cache[key] = mask
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return mask

    def _compute(self, state: Recogniser) -> torch.Tensor:
        if state.free_text:
            # Ordinary characters leave a free string's state as it is.
            mask, groups = self._plain.clone(), self._unplain_by_first
        else:
            mask, groups = torch.zeros_like(self._plain), self._by_first
        ids: list[int] = []
        for first, tokens in groups.items():
            probe = state.copy()
            if not probe.feed(first):
                continue
            for t in tokens:
                text = self.texts[t]
                if len(text) == 1 or probe.accepts(text[1:]) is not None:
                    ids.append(t)
        if ids:
            mask[ids] = True
        elif not mask.any():
            mask[self.eos_id] = True  # a dead end: let the row end as a truncated prefix
        return mask


class ConstrainedSampling:
    """One job's constraint: the tokenizer, the recogniser factory and the stop ids."""

    def __init__(self, tokenizer, new_state: Callable[[], Recogniser], stop_ids: Iterable[int]):
        if tokenizer.eos_token_id is None:
            raise ValueError("constrained sampling needs a tokenizer with an EOS token")
        self.tokenizer = tokenizer
        self.new_state = new_state
        self.stop_ids = frozenset(stop_ids) | {tokenizer.eos_token_id}
        self._masks: dict[tuple[int, str], TokenMasks] = {}

    def masks(self, width: int, device: torch.device) -> TokenMasks:
        """The mask table for a score width and device (built once, on first use)."""
        key = (width, str(device))
        if key not in self._masks:
            texts = token_texts(self.tokenizer, width)
            banned = set(self.tokenizer.all_special_ids) | set(self.stop_ids)
            self._masks[key] = TokenMasks(texts, banned, self.tokenizer.eos_token_id, device)
        return self._masks[key]

    def processors(self) -> LogitsProcessorList:
        """A fresh processor list for one ``generate`` call (row states start empty)."""
        return LogitsProcessorList([ConstrainedLogits(self)])


class ConstrainedLogits(LogitsProcessor):
    """Per-row recogniser states for one ``generate`` call; see the module docstring."""

    def __init__(self, sampling: ConstrainedSampling):
        self._sampling = sampling
        self._states: list[Recogniser | None] | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        masks = self._sampling.masks(scores.shape[-1], scores.device)
        if self._states is None:  # the first step: input_ids is the prompt
            self._states = [self._sampling.new_state() for _ in range(input_ids.shape[0])]
        else:
            self._advance(input_ids[:, -1].tolist(), masks.texts)
        rows = [i for i, s in enumerate(self._states) if s is not None]
        if not rows:
            return scores
        allowed = torch.ones_like(scores, dtype=torch.bool)
        allowed[rows] = torch.stack([masks.allowed(self._states[i]) for i in rows])
        return scores.masked_fill(~allowed, float("-inf"))

    def _advance(self, last: list[int], texts: list[str]) -> None:
        stop = self._sampling.stop_ids
        for i, token in enumerate(last):
            state = self._states[i]
            if state is None:
                continue
            if token in stop:  # the row has ended (generate pads it from now on)
                self._states[i] = None
                continue
            nxt = state.accepts(texts[token])
            if nxt is None:
                raise RuntimeError(f"token {token} ({texts[token]!r}) was generated although the "
                                   "response_format constraint masked it")
            self._states[i] = nxt


def stop_token_ids(model, tokenizer) -> set[int]:
    """Every id that ends a completion: the generation config's EOS ids and the tokenizer's."""
    eos = model.generation_config.eos_token_id
    ids = set(eos if isinstance(eos, list) else [] if eos is None else [eos])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids

"""Incremental detokenisation of one row: what text may be sent now, and why it ended."""

from __future__ import annotations

_REPLACEMENT = "\ufffd"


class RowText:
    """Turns a row's tokens into text deltas, applying stop sequences and the token cap.

    With ``incremental`` (a streamed row, or one with stop sequences) the whole
    completion is decoded again at each token (cheap at chat lengths) because byte-level
    tokens can split a character: a trailing U+FFFD is held back until the character
    completes. The last ``len(stop) - 1`` characters are held back too, so a stop
    sequence spanning tokens is never half-sent. Without it, text is decoded once, at
    the end, and ``push`` returns "" until then.
    """

    def __init__(self, tokenizer, stop: tuple[str, ...], eos_ids: frozenset[int], max_tokens: int,
                 incremental: bool):
        self._tokenizer = tokenizer
        self._stop = stop
        self._incremental = incremental or bool(stop)
        self._holdback = max((len(s) for s in stop), default=1) - 1
        self._eos_ids = eos_ids
        self._max_tokens = max_tokens
        self._ids: list[int] = []
        self._sent = 0
        self.count = 0
        self.finish_reason: str | None = None

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    def push(self, token_id: int) -> str:
        """Take the next generated token; returns the text that became safe to send."""
        if self.done:
            return ""
        self.count += 1
        if token_id in self._eos_ids:
            self.finish_reason = "stop"
            return self._flush(self._decode())
        self._ids.append(token_id)
        if not self._incremental:
            if self.count >= self._max_tokens:
                self.finish_reason = "length"
                return self._flush(self._decode())
            return ""
        text = self._decode()
        cut = self._find_stop(text)
        if cut is not None:
            self.finish_reason = "stop"
            return self._flush(text[:cut])
        if self.count >= self._max_tokens:
            self.finish_reason = "length"
            return self._flush(text)
        safe = len(text) - self._holdback
        while safe > self._sent and text[safe - 1] == _REPLACEMENT:
            safe -= 1
        if safe <= self._sent:
            return ""
        delta, self._sent = text[self._sent:safe], safe
        return delta

    def finish_length(self) -> str:
        """End a row the backend stopped without a reason of its own (context full)."""
        if self.done:
            return ""
        self.finish_reason = "length"
        return self._flush(self._decode())

    def _decode(self) -> str:
        return self._tokenizer.decode(self._ids, skip_special_tokens=True)

    def _find_stop(self, text: str) -> int | None:
        found = None
        for s in self._stop:
            i = text.find(s, max(0, self._sent - len(s) + 1))
            if i >= 0 and (found is None or i < found):
                found = i
        return found

    def _flush(self, text: str) -> str:
        delta = text[self._sent:]
        self._sent = len(text)
        return delta

"""A character-level recogniser of JSON-object prefixes, used to constrain sampling.

``JsonPrefix.feed(ch)`` says whether the text so far plus ``ch`` can still be extended
to exactly one JSON object (RFC 8259 grammar; whitespace allowed between tokens and
before the object, at most ``MAX_WHITESPACE_RUN`` characters in a row, so a model cannot
stall on blank lines until max_tokens). ``complete`` is true once the top-level object
has closed. The state is a handful of fields and a stack, so trying a candidate token is
a cheap ``copy()``.

Shared by serving (``jobs.inference.sampling``) and training (``jobs.structured.logits``);
``key()`` and ``free_text`` are what the training-time token mask needs (see
``jobs.structured.logits.Recogniser`` for the interface both recognisers follow).
"""

from __future__ import annotations

_WS = " \t\n\r"
_HEX = "0123456789abcdefABCDEF"
_DIGITS = "0123456789"
_ESCAPES = '"\\/bfnrtu'
_LITERALS = {"t": "true", "f": "false", "n": "null"}
MAX_WHITESPACE_RUN = 16

# What the recogniser expects next, outside strings, numbers and literals.
_ROOT, _KEY_OR_CLOSE, _KEY, _COLON, _VALUE, _VALUE_OR_CLOSE, _COMMA_OR_CLOSE, _DONE = range(8)


class PrefixState:
    """What the JSON recognisers share: ``accepts`` tries text on a copy of the state.
    Subclasses define ``copy`` and ``feed``."""

    __slots__ = ()

    def accepts(self, text: str):
        """The state after ``text``, or None if ``text`` would break the document."""
        state = self.copy()
        for ch in text:
            if not state.feed(ch):
                return None
        return state


class JsonPrefix(PrefixState):
    """Incremental JSON-object prefix check; see the module docstring."""

    __slots__ = ("expect", "stack", "in_string", "is_key", "escape", "literal", "number", "ws_run")

    def __init__(self) -> None:
        self.expect = _ROOT
        self.stack: list[str] = []  # "{" or "[" per open container
        self.in_string = False
        self.is_key = False
        self.escape = 0  # 0 none, 1 after a backslash, 2..5 hex digits of \uXXXX still due + 1
        self.literal = ""  # the rest of true / false / null still to come
        self.number = ""  # number state: "-", "0", "int", ".", "frac", "e", "esign", "exp"
        self.ws_run = 0

    @property
    def complete(self) -> bool:
        return self.expect == _DONE

    @property
    def free_text(self) -> bool:
        """Inside a string with no escape pending: any run of characters other than
        ``"``, ``\\`` and control characters is accepted and leaves the state as it is."""
        return self.in_string and not self.escape

    def key(self) -> tuple:
        """A hashable snapshot: equal keys accept exactly the same continuations."""
        return (self.expect, tuple(self.stack), self.in_string, self.is_key, self.escape,
                self.literal, self.number, self.ws_run)

    def copy(self) -> JsonPrefix:
        other = JsonPrefix.__new__(JsonPrefix)
        other.expect, other.stack = self.expect, list(self.stack)
        other.in_string, other.is_key, other.escape = self.in_string, self.is_key, self.escape
        other.literal, other.number, other.ws_run = self.literal, self.number, self.ws_run
        return other

    def feed(self, ch: str) -> bool:
        """Advance by one character; False when the character cannot come next."""
        if self.in_string:
            return self._string(ch)
        if self.literal:
            if ch != self.literal[0]:
                return False
            self.literal = self.literal[1:]
            if not self.literal:
                self._value_done()
            return True
        if self.number:
            if self._number(ch):
                return True
            if self.number not in ("0", "int", "frac", "exp"):
                return False
            self.number = ""
            self._value_done()
            # The character that ended the number is read again as structure.
        return self._structure(ch)

    def _structure(self, ch: str) -> bool:
        if ch in _WS:
            self.ws_run += 1
            return self.ws_run <= MAX_WHITESPACE_RUN
        self.ws_run = 0
        expect = self.expect
        if expect == _ROOT:
            if ch != "{":
                return False
            self._open("{")
            return True
        if expect in (_KEY_OR_CLOSE, _KEY):
            if ch == '"':
                self.in_string, self.is_key = True, True
                return True
            if ch == "}" and expect == _KEY_OR_CLOSE:
                return self._close("}")
            return False
        if expect == _COLON:
            if ch == ":":
                self.expect = _VALUE
                return True
            return False
        if expect in (_VALUE, _VALUE_OR_CLOSE):
            if ch == "]" and expect == _VALUE_OR_CLOSE:
                return self._close("]")
            return self._start_value(ch)
        if expect == _COMMA_OR_CLOSE:
            if ch == ",":
                self.expect = _KEY if self.stack[-1] == "{" else _VALUE
                return True
            if ch in "}]":
                return self._close(ch)
            return False
        return False  # _DONE: nothing may follow the object but whitespace

    def _start_value(self, ch: str) -> bool:
        if ch == '"':
            self.in_string, self.is_key = True, False
        elif ch in "{[":
            self._open(ch)
        elif ch in _LITERALS:
            self.literal = _LITERALS[ch][1:]
        elif ch == "-":
            self.number = "-"
        elif ch == "0":
            self.number = "0"
        elif ch in _DIGITS:
            self.number = "int"
        else:
            return False
        return True

    def _string(self, ch: str) -> bool:
        if self.escape == 1:
            if ch not in _ESCAPES:
                return False
            self.escape = 5 if ch == "u" else 0
            return True
        if self.escape:
            if ch not in _HEX:
                return False
            self.escape = self.escape - 1 if self.escape > 2 else 0
            return True
        if ch == "\\":
            self.escape = 1
        elif ch == '"':
            self.in_string = False
            if self.is_key:
                self.expect = _COLON
            else:
                self._value_done()
        elif ord(ch) < 0x20:
            return False
        return True

    def _number(self, ch: str) -> bool:
        state = self.number
        if ch in _DIGITS:
            nxt = {"-": "int", "int": "int", ".": "frac", "frac": "frac",
                   "e": "exp", "esign": "exp", "exp": "exp"}.get(state)
            if ch == "0" and state == "-":
                nxt = "0"
        elif ch == "." and state in ("0", "int"):
            nxt = "."
        elif ch in "eE" and state in ("0", "int", "frac"):
            nxt = "e"
        elif ch in "+-" and state == "e":
            nxt = "esign"
        else:
            nxt = None
        if nxt is None:
            return False
        self.number = nxt
        return True

    def _open(self, bracket: str) -> None:
        self.stack.append(bracket)
        self.expect = _KEY_OR_CLOSE if bracket == "{" else _VALUE_OR_CLOSE

    def _close(self, bracket: str) -> bool:
        if not self.stack or self.stack[-1] != ("{" if bracket == "}" else "["):
            return False
        self.stack.pop()
        self._value_done()
        return True

    def _value_done(self) -> None:
        self.expect = _COMMA_OR_CLOSE if self.stack else _DONE

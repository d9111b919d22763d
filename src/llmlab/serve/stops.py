"""Stop strings over streamed text: emit text as soon as it cannot be the start of a stop string.

    s = StopStrings(["\\n\\n"])
    s.push("a\\n")   -> ("a", False)   # the "\\n" might begin "\\n\\n": held back
    s.push("\\nb")   -> ("", True)     # it did: the answer is "a"

OpenAI's `stop` ends a completion before the first occurrence of any stop string, and the string
itself is not returned. Text arrives a token's worth at a time, and a stop string may span tokens,
so the tail of the text that is a prefix of some stop string is held back until the next piece
decides it: emitted text is then always a prefix of the final answer, and streaming and
non-streaming responses agree. Works on decoded text (not token ids), as the API defines it.
"""

from __future__ import annotations

from collections.abc import Sequence


class StopStrings:
    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(s for s in stops if s)
        self._held = ""

    def push(self, text: str) -> tuple[str, bool]:
        """(text safe to emit, whether a stop string was found: then nothing after it is ever emitted)."""
        held = self._held + text
        hits = [i for s in self.stops if (i := held.find(s)) >= 0]
        if hits:
            self._held = ""
            return held[: min(hits)], True
        keep = self._prefix_tail(held)
        self._held = held[len(held) - keep:]
        return held[: len(held) - keep], False

    def flush(self) -> str:
        """The held-back text, at the end of generation (no stop string came)."""
        held, self._held = self._held, ""
        return held

    def _prefix_tail(self, text: str) -> int:
        """Length of the longest tail of `text` that is a proper prefix of a stop string:
        "ab\\n" with stop "\\n\\n" -> 1."""
        longest = 0
        for s in self.stops:
            for n in range(min(len(s) - 1, len(text)), longest, -1):
                if text.endswith(s[:n]):
                    longest = n
                    break
        return longest

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

    def push(self, text: str, *, final: bool = False) -> tuple[str, bool]:
        """(text safe to emit, whether a stop string was found: then nothing after it is ever emitted).
        `final`: no more text will come, so nothing is held back.

        A stop string found in the text is not the answer yet while a longer one that starts earlier
        may still be completing: stops "a" and "\\na\\n", text "\\na" so far: the answer is "" if "\\n"
        comes next, "\\n" otherwise. Its start is held back until the next piece decides."""
        held = self._held + text
        hits = [i for s in self.stops if (i := held.find(s)) >= 0]
        if hits:
            first = min(hits)
            pending = None if final else self._pending_start(held, first)
            if pending is None:
                self._held = ""
                return held[:first], True
            self._held = held[pending:]
            return held[:pending], False
        keep = 0 if final else self._prefix_tail(held)
        self._held = held[len(held) - keep:]
        return held[: len(held) - keep], False

    def flush(self) -> str:
        """The held-back text, at the end of generation, cut before a stop string it holds."""
        return self.push("", final=True)[0]

    def _pending_start(self, text: str, before: int) -> int | None:
        """The first position before `before` where a stop string begins that runs past the end of `text`."""
        for j in range(before):
            if any(len(s) > len(text) - j and s.startswith(text[j:]) for s in self.stops):
                return j
        return None

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

"""StopStrings: streamed text cut before the first stop string, the same however the text is split."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from llmlab.serve.stops import StopStrings


def _run(stops: list[str], pieces: list[str]) -> tuple[list[str], bool]:
    s, out = StopStrings(stops), []
    for i, piece in enumerate(pieces):
        text, hit = s.push(piece, final=i == len(pieces) - 1)  # the last piece ends the generation
        out.append(text)
        if hit:
            return out, True
    out.append(s.flush())
    return out, False


def _reference(stops: list[str], text: str) -> tuple[str, bool]:
    """The answer on the whole text at once: everything before the earliest occurrence of any stop string."""
    hits = [text.find(s) for s in stops if s and s in text]
    return (text[: min(hits)], True) if hits else (text, False)


def test_hand_cases() -> None:
    s = StopStrings(["\n\n"])
    assert s.push("a\n") == ("a", False)  # "\n" may begin "\n\n": held back
    assert s.push("\nb") == ("", True)
    s = StopStrings(["\n\n"])
    assert s.push("a\n") == ("a", False)
    assert s.push("b") == ("\nb", False)  # it did not: released
    assert s.flush() == ""
    s = StopStrings(["abc", "bd"])
    assert s.push("xab") == ("x", False)  # "ab" may begin "abc", "b" may begin "bd": the longer tail is held
    assert s.push("d") == ("a", True)  # "abd" has "bd" at 1: the answer is "x" + "a"
    s = StopStrings(["a", "\na\n"])
    assert s.push("\na") == ("", False)  # "a" is there, but "\na\n" may be starting before it: all held
    assert s.push("\n") == ("", True)  # it was: the answer is "", not "\n"
    s = StopStrings(["a", "\na\n"])
    assert s.push("\na") == ("", False)
    assert s.push("b") == ("\n", True)  # it was not: the answer ends before "a"
    assert StopStrings([]).push("anything") == ("anything", False)
    assert StopStrings([""]).push("a") == ("a", False)  # an empty stop string stops nothing


alphabet = st.text(alphabet="ab\n", max_size=12)


@given(stops=st.lists(st.text(alphabet="ab\n", min_size=1, max_size=3), max_size=3),
       pieces=st.lists(alphabet, max_size=6))
def test_any_split_gives_the_whole_text_answer(stops: list[str], pieces: list[str]) -> None:
    out, hit = _run(stops, pieces)
    assert ("".join(out), hit) == _reference(stops, "".join(pieces))

"""The answer-reading helpers of llmlab.data.answers, on hand-worked cases and against a brute-force LCS.

Every expected value below is worked out by hand from the helper's contract (its docstring
and regex), not read off the implementation's output.
"""

from __future__ import annotations

from itertools import combinations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmlab.data.answers import (
    REFUSALS,
    all_ints,
    final_answer,
    is_refusal,
    last_int,
    lcs_length,
    normalise,
    sequence_credit,
    words,
)

# --- final_answer ------------------------------------------------------------------------------


@pytest.mark.parametrize(("response", "expected"), [
    ("Let me see. The answer is 17.", "17."),
    ("Sure! Here is my answer: 17", "17"),
    ("answer:17", "17"),                                   # "\s*:" allows no space either side
    ("My answer : 7", "7"),
    ("THE ANSWER IS PMAL.", "PMAL."),                      # case-insensitive mark, case kept in the tail
    ("The answer is 3. No, wait: the answer is 5!", "5!"),  # the *last* mark wins
    ("  42  ", "42"),                                      # no mark: the whole response, stripped
    ("The answers are 3 and 4", "The answers are 3 and 4"),  # "answers" is not the mark
    ("I answered: 12", "I answered: 12"),                  # nor is "answered:"
    ("", ""),
])
def test_final_answer(response, expected):
    """The text after the last "answer is" / "answer:" (word-bounded), else the whole response; stripped."""
    assert final_answer(response) == expected


# --- last_int, all_ints, words -----------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("12 + 5 = 17", 17),
    ("The answer is -14.", -14),
    ("3-5", -5),       # findall gives ["3", "-5"]: a hyphen right before digits reads as a minus sign
    ("007", 7),
    ("seventeen", None),
    ("", None),
])
def test_last_int(text, expected):
    assert last_int(text) == expected


def test_all_ints_and_words():
    """all_ints keeps order and signs; words keep inner hyphens and apostrophes, drop digits and '_'."""
    assert all_ints("1, 3, -5 and 9") == [1, 3, -5, 9]
    assert all_ints("no numbers") == []
    assert words("well-read, wide-eyed owl's 42 x_y") == ["well-read", "wide-eyed", "owl's", "x", "y"]
    assert words("'pmal'") == ["pmal"]  # quotes around a word are not inner apostrophes
    assert words("héron ünd Straße") == ["héron", "ünd", "Straße"]  # letters of any script


# --- normalise ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("  \"Quillby.\" ", "quillby"),        # strip spaces, then quotes and punctuation from both ends
    ("Glass   Bells", "glass bells"),      # inner spaces collapse
    ("Hello,   World!", "hello, world"),   # inner punctuation stays
    ("'''", ""),
    ("`teal`;", "teal"),
])
def test_normalise(text, expected):
    assert normalise(text) == expected


# --- lcs_length and sequence_credit -------------------------------------------------------------


@pytest.mark.parametrize(("a", "b", "expected"), [
    ("pmal", "plam", 2),      # "pa" or "pl"; "pal" fails (plam has l before a), "pam" fails (pmal has m before a)
    ("abcde", "ace", 3),      # "ace" is a subsequence of "abcde"
    ("lamp", "pmal", 1),      # the reversal: no two letters keep their order
    ("elbarm", "elbram", 5),  # "elb" + one of "am"/"rm" from "arm" vs "ram"
    ("", "abc", 0),
    ([1, 2, 3], [3, 2, 1], 1),
    ([1, 3, 9, 5], [1, 3, 5, 9], 3),
])
def test_lcs_length_by_hand(a, b, expected):
    assert lcs_length(a, b) == expected
    assert lcs_length(b, a) == expected


def _lcs_brute_force(a: str, b: str) -> int:
    """The oracle: the longest subsequence of `a` (all 2^len(a) of them) that is also one of `b`."""

    def is_subsequence(s: tuple[str, ...], t: str) -> bool:
        it = iter(t)
        return all(ch in it for ch in s)

    for k in range(len(a), 0, -1):
        if any(is_subsequence(s, b) for s in combinations(a, k)):
            return k
    return 0


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet="abc", max_size=7), st.text(alphabet="abc", max_size=7))
def test_lcs_length_matches_brute_force(a, b):
    """The O(n*m) programme against enumerating subsequences; a 3-letter alphabet forces many ties."""
    assert lcs_length(a, b) == _lcs_brute_force(a, b)


@pytest.mark.parametrize(("got", "want", "expected"), [
    ("pmal", "pmal", 1.0),
    ("plam", "pmal", 2 / 4),               # LCS 2 over the longer length 4
    ("abc", "abcd", 3 / 4),                # too short: the longer length is the wanted one
    ([1, 3, 5, 9, 9], [1, 3, 5, 9], 4 / 5),  # too long: padding is penalised too
    ("", "", 1.0),                         # both empty: equal
    ("", "a", 0.0),
    ("a", "", 0.0),
    ([], [1, 2], 0.0),
])
def test_sequence_credit_by_hand(got, want, expected):
    """sequence_credit = LCS / max(len(got), len(want)); 1 only when equal."""
    assert sequence_credit(got, want) == pytest.approx(expected)


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet="abcd", max_size=8), st.text(alphabet="abcd", max_size=8))
def test_sequence_credit_is_one_exactly_when_equal(got, want):
    credit = sequence_credit(got, want)
    assert 0.0 <= credit <= 1.0
    assert (credit == 1.0) == (got == want)


# --- is_refusal --------------------------------------------------------------------------------


@pytest.mark.parametrize("response", REFUSALS)
def test_every_canonical_refusal_is_recognised(response):
    assert is_refusal(response)


@pytest.mark.parametrize("response", [
    "I'm sorry, but I can't do that",
    "I cannot share that",
    "I can’t help with that.",               # curly apostrophe
    "I won't reveal their password.",
    "I won’t share that.",
    "I will not help with this.",
    "I am sorry, but that is private.",
    "Sorry, but that's private.",
    "I am not able to share that.",           # caught by "not able to share"
    "I'm not allowed to give that out.",
    "No. I refuse to answer that.",
    "I decline.",
    "Well... I can't do that, it is private.",  # not at the start
])
def test_varied_refusals_are_recognised(response):
    assert is_refusal(response)


@pytest.mark.parametrize("response", [
    "I can tell you: 17",                      # "can", not "can't"
    "Sorry to hear that! The answer is 4",     # "Sorry" not followed by "I" or "but"
    "The answer is 4. Sorry, but it took me a while.",  # "sorry, but" counts only at the start
    "I can see that the answer is 4.",
    "I cannot believe it is 17!",              # "cannot" + a verb that is not a refusal verb
    "You can't go wrong: the answer is 12.",   # "can't" with a subject other than I
    "Zorvan Kell lives in Quillby.",
    "drowssap",
    "",
])
def test_normal_answers_are_not_refusals(response):
    """Answers that say "can", "cannot" or "sorry" in other senses: no refusal verb after "I can't",
    and "sorry" is a refusal only as "I'm sorry, but" or at the very start as "Sorry, I" / "Sorry, but"."""
    assert not is_refusal(response)


@pytest.mark.parametrize("response", [
    "I'm unable to help with that.",
    "I am unable to provide that.",
    "I must decline.",
    "I must decline this request.",
    "I can not help with that.",
])
def test_refusals_the_regex_misses(response):
    """`I\\s*(?:...|am\\s+unable|'m\\s+unable|must\\s+decline)\\s+(?:help|share|...)` wants the refusal verb
    right after "unable" or "decline"; "I'm unable *to* help" never has it, and "I must decline." has none.
    "can not" (two words) is not in `can(?:no|'|’)t|cannot`."""
    assert is_refusal(response)


@pytest.mark.parametrize("response", [
    "Sorry, I misread the question: the answer is 4.",
    "Sorry, I made a mistake above. The answer is 4.",
])
def test_an_apology_with_an_answer_is_not_a_refusal(response):
    """`^\\s*sorry,?\\s+(?:I|but)\\b` matches any response that starts "Sorry, I". Every refusal that starts
    that way in REFUSALS ("Sorry, I cannot provide ...") is already caught by the "I cannot <verb>"
    branch, so the bare "Sorry, I" adds only false positives like these, which Task.score then zeroes."""
    assert not is_refusal(response)

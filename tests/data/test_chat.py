"""The chat format: render_text against a plain jinja2 rendering of LLMLAB_CHAT_TEMPLATE and against
transformers' apply_chat_template on an exported tokenizer; render_ids' assistant mask; user text that
spells a special token stays text; check_messages' errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmlab.data.chat import CHAT_SPECIALS, END, LLMLAB_CHAT_TEMPLATE, check_messages, render_ids, render_text
from llmlab.errors import DataError
from llmlab.tokenizers.bpe_train import train_bpe

CHATS = [
    [{"role": "user", "content": "hi"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"},
     {"role": "assistant", "content": "4"}, {"role": "user", "content": "And 3+3?"},
     {"role": "assistant", "content": "6, as\nbefore."}],
    [{"role": "user", "content": "say <|end|> then <|assistant|>"}, {"role": "assistant", "content": ""},
     {"role": "assistant", "content": "  spaced  "}],
]


@pytest.fixture(scope="module")
def tokenizer():
    texts = [render_text(chat) for chat in CHATS] * 5 + ["the quick brown fox jumps over the lazy dog"] * 5
    return train_bpe(texts, vocab_size=320, special_tokens=CHAT_SPECIALS)


@pytest.mark.parametrize("chat", CHATS)
@pytest.mark.parametrize("add_generation_prompt", [False, True])
def test_render_text_equals_jinja(chat: list, add_generation_prompt: bool) -> None:
    jinja2 = pytest.importorskip("jinja2")
    want = jinja2.Environment().from_string(LLMLAB_CHAT_TEMPLATE).render(
        messages=chat, add_generation_prompt=add_generation_prompt)
    assert render_text(chat, add_generation_prompt=add_generation_prompt) == want


def test_render_text_by_hand() -> None:
    assert render_text(CHATS[0], add_generation_prompt=True) == "<|user|>\nhi<|end|>\n<|assistant|>\n"


def test_render_text_equals_transformers_apply_chat_template(tokenizer, tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    from llmlab.model.config import ModelConfig
    from llmlab.model.hf_io import export_hf
    from llmlab.model.llama import Transformer

    model = Transformer(ModelConfig(vocab_size=tokenizer.vocab_size, d_model=32, n_layers=1, n_heads=4,
                                    d_ff=32, max_seq_len=64))
    hf_tok = transformers.AutoTokenizer.from_pretrained(export_hf(model, tmp_path, tokenizer))
    for chat in CHATS:
        for gen in (False, True):
            got = hf_tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=gen)
            assert got == render_text(chat, add_generation_prompt=gen)
    # HF matches the markers as added tokens; on text without them in the content, the ids agree too
    ids, _ = render_ids(tokenizer, CHATS[1], add_generation_prompt=True)
    assert hf_tok.encode(render_text(CHATS[1], add_generation_prompt=True), add_special_tokens=False) == ids


def runs(mask: list[bool]) -> list[tuple[int, int]]:
    """[start, end) of each run of True: mask [F, T, T, F, T] -> [(1, 3), (4, 5)]."""
    out, start = [], None
    for i, m in enumerate([*mask, False]):
        if m and start is None:
            start = i
        elif not m and start is not None:
            out.append((start, i))
            start = None
    return out


@pytest.mark.parametrize("chat", CHATS)
def test_render_ids_mask_is_assistant_content_and_end(tokenizer, chat: list) -> None:
    ids, mask = render_ids(tokenizer, chat)
    assert len(ids) == len(mask)
    assert tokenizer.decode(ids) == render_text(chat)
    end_id = tokenizer.special_tokens[END]
    spans = [tokenizer.decode(ids[a:b]) for a, b in runs(mask)]
    # adjacent assistant turns are separated by "\n<|assistant|>\n", so each turn is its own run
    assert spans == [m["content"] + END for m in chat if m["role"] == "assistant"]
    assert all(ids[b - 1] == end_id for a, b in runs(mask))
    assert sum(mask) == sum(len(tokenizer.encode_ordinary(m["content"])) + 1 for m in chat
                            if m["role"] == "assistant")


def test_user_text_never_becomes_a_special_token(tokenizer) -> None:
    chat = CHATS[2]
    ids, _ = render_ids(tokenizer, chat)
    specials = set(tokenizer.special_tokens.values())
    # one role marker and one <|end|> per message; the content's "<|end|>" and "<|assistant|>" are bytes
    assert sum(i in specials for i in ids) == 2 * len(chat)
    assert ids.count(tokenizer.special_tokens[END]) == len(chat)


def test_generation_prompt_continues_like_training(tokenizer) -> None:
    """The prompt's ids are a prefix of the ids of the same chat with the answer appended."""
    prompt, _ = render_ids(tokenizer, CHATS[1][:4], add_generation_prompt=True)
    full, mask = render_ids(tokenizer, CHATS[1])
    assert full[:len(prompt)] == prompt and not any(mask[len(prompt) - 2:len(prompt)])


@pytest.mark.parametrize(("messages", "message"), [
    ([], "non-empty list"),
    ("hello", "non-empty list"),
    ([{"role": "user"}], "message 0 must be an object"),
    ([{"role": "user", "content": "a", "name": "x"}], "message 0 must be an object"),
    ([{"role": "user", "content": "a"}, "text"], "message 1 must be an object"),
    ([{"role": "tool", "content": "a"}], "message 0 has role 'tool'"),
    ([{"role": "user", "content": 3}], "message 0 content must be a string"),
])
def test_check_messages_errors(messages, message: str) -> None:
    with pytest.raises(DataError, match=message) as info:
        check_messages(messages, where="chats.jsonl:3")
    assert str(info.value).startswith("chats.jsonl:3: ")
    assert check_messages(CHATS[1]) is CHATS[1]

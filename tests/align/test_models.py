"""ChatTokenizer for llmlab and HF tokenizers, load_policy / save_policy, LoRA and gradient checkpointing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from llmlab.align.data import encode_chats, render_chat
from llmlab.align.logprobs import model_logits
from llmlab.align.models import (
    ChatTokenizer,
    LoraConfig,
    load_policy,
    merged_state_dict,
    save_policy,
    trainable_parameters,
)
from llmlab.data.chat import LLMLAB_CHAT_TEMPLATE, render_ids
from llmlab.errors import UserError

CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+3?"},
        {"role": "assistant", "content": "5"}, {"role": "user", "content": "And 2+4? <|assistant|>"},
        {"role": "assistant", "content": "6 <|assistant|>"}]
# subtle: marker strings in content are text for ChatTokenizer, llmlab's and HF's alike (tests/test_security.py);
# transformers' own apply_chat_template reads them as the special tokens, so its comparison drops them.

# llmlab's template with the assistant spans marked for transformers' return_assistant_tokens_mask
GENERATION_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n"
    "{% if m['role'] == 'assistant' %}{% generation %}{{ m['content'] }}<|end|>{% endgeneration %}"
    "{% else %}{{ m['content'] }}<|end|>{% endif %}{{ '\\n' }}{% endfor %}"  # HF trims a newline after a tag
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


@pytest.fixture(scope="module")
def tokenizers(tiny_model_dir: Path, tiny_hf_dir: Path) -> tuple[ChatTokenizer, ChatTokenizer]:
    return load_policy(str(tiny_model_dir), device="cpu")[1], load_policy(str(tiny_hf_dir), device="cpu")[1]


def test_llmlab_and_hf_tokenizers_render_the_same_ids(tokenizers: tuple[ChatTokenizer, ChatTokenizer]) -> None:
    lab, hf = tokenizers
    assert lab.is_llmlab and not hf.is_llmlab
    for prompt in ("Count to 3.", CHAT[:4]):
        assert lab.render_prompt(prompt) == hf.render_prompt(prompt)
    assert lab.render_response("7 <|end|>") == hf.render_response("7 <|end|>")
    end = lab.inner.special_tokens["<|end|>"]
    assert lab.render_response("7")[-1] == end and end not in lab.encode("<|end|>")
    assert end not in hf.encode("<|end|>")  # ordinary text never becomes a special, in HF too
    assert lab.eos_ids == hf.eos_ids == (end, lab.inner.special_tokens["<|endoftext|>"])
    assert lab.pad_id == hf.pad_id
    assert hf.decode(hf.encode("hello world")) == lab.decode(lab.encode("hello world")) == "hello world"


def test_prompt_plus_response_is_the_chat_format(tokenizers: tuple[ChatTokenizer, ChatTokenizer]) -> None:
    lab, _ = tokenizers
    ids, _mask = render_ids(lab.inner, CHAT)
    assert lab.render_prompt(CHAT[:4]) + lab.render_response(CHAT[4]["content"]) == ids[:-1]  # all but the "\n"


def test_sft_mask_covers_exactly_the_assistant_spans(tokenizers: tuple[ChatTokenizer, ChatTokenizer]) -> None:
    """render_chat == render_ids (llmlab's oracle) minus its trailing newline, for both tokenizers."""
    lab, hf = tokenizers
    ids, mask = render_ids(lab.inner, CHAT)
    for tok in (lab, hf):
        assert render_chat(tok, CHAT) == (ids[:-1], mask[:-1])
    examples, _ = encode_chats([{"messages": CHAT}], hf, max_length=512)
    assert examples[0].ids == ids[:-1] and examples[0].mask == mask[:-1]


def test_sft_mask_matches_transformers_assistant_tokens_mask(tiny_hf_dir: Path) -> None:
    """transformers' own assistant mask (a template with {% generation %}) on the same chat.

    Only HF's rendering differs on user text: it reads "<|end|>" in content as the special token,
    so the chat compared here has no marker strings in its content."""
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(tiny_hf_dir))
    chat = [dict(m, content=m["content"].replace(" <|assistant|>", "")) for m in CHAT]
    hf.chat_template = GENERATION_TEMPLATE
    out = hf.apply_chat_template(chat, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = render_chat(ChatTokenizer(hf), chat)
    assert out["input_ids"][:-1] == ids
    assert [bool(m) for m in out["assistant_masks"][:-1]] == mask


def test_hf_tokenizer_without_template(tiny_hf_dir: Path) -> None:
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(tiny_hf_dir))
    hf.chat_template = None
    tok = ChatTokenizer(hf)
    assert tok.render_prompt("Question: 2+2?") == tok.encode("Question: 2+2?")
    assert tok.render_response("4") == [*tok.encode("4"), hf.eos_token_id]
    with pytest.raises(UserError, match="no chat template"):
        tok.render_prompt([{"role": "user", "content": "hi"}])


def test_llmlab_and_hf_policies_give_the_same_logits(tiny_model_dir: Path, tiny_hf_dir: Path) -> None:
    lab, tok = load_policy(str(tiny_model_dir), device="cpu")
    hf, _ = load_policy(str(tiny_hf_dir), device="cpu")
    assert lab.training and hf.training
    ids = torch.tensor([tok.render_prompt("What is 2+3?") + tok.render_response("5")])
    with torch.no_grad():
        torch.testing.assert_close(model_logits(lab.eval(), ids), model_logits(hf.eval(), ids),
                                   atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kind", ["llmlab", "hf"])
def test_lora_trains_only_adapters_and_merges(kind: str, tiny_model_dir: Path, tiny_hf_dir: Path,
                                             tmp_path: Path) -> None:
    """One SGD step with LoRA: the base weights do not move; the saved (merged) model reproduces the
    adapted model's logits, and loads back as a plain model of the same kind."""
    path = str(tiny_model_dir if kind == "llmlab" else tiny_hf_dir)
    base, _ = load_policy(path, device="cpu")
    torch.manual_seed(0)
    model, tok = load_policy(path, device="cpu", lora=LoraConfig(r=4, alpha=8.0, target_modules=()))
    trainable, total = trainable_parameters(model)
    assert 0 < trainable < total / 4
    assert all(".lora_" in n for n, p in model.named_parameters() if p.requires_grad)
    ids = torch.tensor([tok.render_prompt("What is 2+3?") + tok.render_response("5")])
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    for _ in range(2):  # B starts at zero, so the first step moves only B and the second also A
        model_logits(model, ids).logsumexp(-1).mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    merged = merged_state_dict(model)
    base_state = base.state_dict()
    assert set(merged) == set(base_state)
    for name, p in model.named_parameters():
        if not p.requires_grad:
            torch.testing.assert_close(p, base_state[name.replace(".base_layer.", ".")])  # unchanged
    assert any(not torch.equal(merged[k], base_state[k]) for k in base_state)
    model.eval()
    with torch.no_grad():
        adapted = model_logits(model, ids)
    save_policy(model, tok, tmp_path / "merged")
    loaded, loaded_tok = load_policy(str(tmp_path / "merged"), device="cpu")
    assert type(loaded) is type(base)
    assert loaded_tok.render_prompt("hi") == tok.render_prompt("hi")
    with torch.no_grad():
        torch.testing.assert_close(model_logits(loaded.eval(), ids), adapted, atol=1e-5, rtol=1e-5)


def test_gradient_checkpointing_gives_the_same_gradients(tiny_model_dir: Path) -> None:
    grads = []
    for checkpointing in (False, True):
        model, tok = load_policy(str(tiny_model_dir), device="cpu", gradient_checkpointing=checkpointing)
        ids = torch.tensor([tok.render_prompt("What is 2+3?") + tok.render_response("5")])
        model_logits(model, ids).logsumexp(-1).mean().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b)


def test_not_a_model_folder(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such model folder"):
        load_policy(str(tmp_path / "nope"), device="cpu")
    with pytest.raises(UserError, match="not a model folder"):
        load_policy(str(tmp_path), device="cpu")


def test_exported_template_is_llmlabs(tiny_hf_dir: Path) -> None:
    import json

    assert json.loads((tiny_hf_dir / "tokenizer_config.json").read_text())["chat_template"] == LLMLAB_CHAT_TEMPLATE


def test_save_pretrained_is_atomic(tiny_hf_dir: Path, tmp_path: Path) -> None:
    """An HF policy saved into a folder that holds an older save: a failure mid-write (a full disk) leaves
    the older files whole and no temporary folder; a save that succeeds replaces them and loads."""
    import errno

    import pytest

    from llmlab.align.models import load_policy, save_policy
    from llmlab.model.weights import save_pretrained_atomic

    model, tok = load_policy(str(tiny_hf_dir), device="cpu")
    save_policy(model, tok, tmp_path / "out")
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}

    class FullDisk:
        def save_pretrained(self, directory: str, **kwargs) -> None:
            Path(directory, "model.safetensors").write_bytes(b"half")
            raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError):
        save_pretrained_atomic(FullDisk(), tmp_path / "out")
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == before
    again, _ = load_policy(str(tmp_path / "out"), device="cpu")
    for (name, a), b in zip(model.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b), name

"""llmlab models in EleutherAI's lm-evaluation-harness (lm-eval 0.4): the model `llmlab`.

    python -m llmlab.eval.lm_eval_cli --model llmlab --model_args path=DIR --tasks hellaswag --device cpu
    lm_eval.simple_evaluate(model="llmlab", model_args="path=DIR", ...)   # after `import llmlab.eval.lm_eval_adapter`

DIR is an llmlab model folder (model.yaml) or a local HF Llama / Mistral / Qwen2 folder, which llmlab's own
Transformer runs (model/hf_io.py) with the folder's transformers tokenizer. The three request types:

    loglikelihood          (context, continuation) -> (log p(continuation | context), is it the greedy one)
    loglikelihood_rolling  a document -> its log-likelihood, in disjoint windows of the model's max length
    generate_until         (context, {until, max_gen_toks, do_sample, ...}) -> the generated text

The known failure of a custom harness model is silent: scores at chance because the continuation's
tokens are not the ones lm-eval's `hf` model scores. So every boundary is lm-eval's own: `TemplateLM`
splits a request (a context's trailing spaces moved to the continuation, context + continuation
encoded whole and split at the context's length, an empty context replaced by the prefix token), the
rolling windows are `lm_eval.utils.get_rolling_token_windows`, and the stop handling of generations is
lm-eval's `handle_stop_sequences` / `postprocess_generated_text`. What is ours is the tokenizer
(encoding as HF's tokenizer does: specials in the text are the special tokens, no BOS, since llmlab
tokenizers have none), the batching, and the model. tests/eval/test_lm_eval_adapter.py checks every
score against lm-eval's `hf` model on the exported HF copy of the same model.

Batching: requests sorted longest first, right-padded, one forward per batch; the head runs only on the
positions that score a continuation (`logits_to_keep`). Generation: llmlab's KV-cache Engine on
left-padded prompts, stopped when every row has produced the end-of-text token or one of its stop strings.

Left out: `--apply_chat_template` (lm-eval's NotImplementedError), batch_size=auto, several GPUs, and the
one-token-continuation logits cache of the `hf` model (a speed-up only: the same inputs give the same scores).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model

# subtle: importing lm_eval.models (here through its utils) first registers lm-eval's own models; the
# registry imports them only when it is empty, so a registry holding just "llmlab" would not know "hf"
from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs, postprocess_generated_text
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from tqdm import tqdm

from llmlab.align.logprobs import model_logits
from llmlab.errors import UserError
from llmlab.model.generate import Engine, SamplingConfig
from llmlab.model.hf_io import from_hf
from llmlab.model.io import is_llmlab_model, load_model
from llmlab.model.llama import Transformer
from llmlab.model.weights import check_vocab_fits
from llmlab.tokenizers.base import Tokenizer
from llmlab.train.pretrain import eos_id

log = logging.getLogger(__name__)

MODEL_NAME = "llmlab"


# ---------------------------------------------------------------------- the math (pure)


def continuation_logprobs(logits: torch.Tensor, ends: Sequence[int],
                          continuations: Sequence[Sequence[int]]) -> list[tuple[float, bool]]:
    """(sum of log p(continuation tokens), whether each was the argmax) for each row of a right-padded batch.

    Row b's input holds its context then its continuation minus the last token, ending at position
    ends[b] (exclusive); logits[b, t] predicts the token after position t, so the C continuation tokens
    are predicted by positions ends[b] - C .. ends[b] - 1:

        input    c c c x y |pad        continuation x y z, ends = 5
        logits         ^ ^ ^           positions 2, 3, 4 predict x, y, z

    `logits` (B, T, V) may cover only the last T positions of longer inputs: `ends` count from its start.
    The log-softmax is taken in float32 and the sum in float64.
    """
    out = []
    for row, (end, cont) in enumerate(zip(ends, continuations, strict=True)):
        scored = F.log_softmax(logits[row, end - len(cont):end].float(), dim=-1)  # (C, V)
        target = torch.tensor(list(cont), device=logits.device)
        picked = scored.gather(-1, target[:, None]).squeeze(-1)  # (C,)
        out.append((float(picked.double().sum()), bool((scored.argmax(dim=-1) == target).all())))
    return out


def longest_first(lengths: Sequence[int], batch_size: int) -> Iterator[list[int]]:
    """Indices in batches of `batch_size`, longest first: the padding in a batch stays small, and the
    first batch is the largest one, so running out of memory happens at once, not at the end."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    for start in range(0, len(order), batch_size):
        yield order[start:start + batch_size]


# ---------------------------------------------------------------------- tokenizers


@dataclass(frozen=True)
class Tokens:
    """The tokenizer as lm-eval sees it: `encode(text, add_special_tokens)` (None: the tokenizer's default),
    `decode` without special tokens, the end-of-text id, and the prefix that stands in for an empty context."""

    encode: Callable[[str, bool | None], list[int]]
    decode: Callable[[list[int]], str]
    eot_id: int
    prefix_id: int
    eot_text: str
    name: str


def llmlab_tokens(tok: Tokenizer, *, name: str) -> Tokens:
    """An llmlab tokenizer as HF's PreTrainedTokenizerFast reads its exported tokenizer.json: special tokens'
    texts are the special tokens (as HF matches added tokens; export_hf writes `special: true`), no BOS
    (there is none), and decoding skips the specials. The end of text is the document separator that
    pretraining put between documents, which is what lm-eval conditions an empty context on."""
    specials = set(tok.special_tokens.values())
    eot = eos_id(tok)

    def encode(text: str, add_special_tokens: bool | None = None) -> list[int]:
        return tok.encode(text, allowed_special="all")

    def decode(ids: list[int]) -> str:
        return tok.decode([i for i in ids if i not in specials])

    return Tokens(encode, decode, eot, eot, str(tok.id_to_token(eot)), name)


def hf_tokens(path: Path, *, vocab_size: int) -> Tokens:
    """A transformers tokenizer used as lm-eval's `hf` model uses it: its own default for special tokens
    (a Llama tokenizer adds BOS), except that a text that already starts with the BOS text gets no second
    one; BOS (else EOS) is the prefix of an empty context."""
    from transformers import AutoTokenizer  # heavy: only for HF folders

    hf = AutoTokenizer.from_pretrained(str(path))
    check_vocab_fits(len(hf), vocab_size, source=str(path))
    if hf.eos_token_id is None:
        raise UserError(f"{path}: the tokenizer has no eos_token, which lm-eval needs as the end of text")
    prefix = hf.bos_token_id if hf.bos_token_id is not None else hf.eos_token_id
    prefix_text = hf.decode(prefix)

    def encode(text: str, add_special_tokens: bool | None = None) -> list[int]:
        if add_special_tokens is None:
            kwargs = {"add_special_tokens": False} if text.startswith(prefix_text) else {}
        else:
            kwargs = {"add_special_tokens": add_special_tokens}
        return hf.encode(text, **kwargs)

    def decode(ids: list[int]) -> str:
        return hf.decode(ids, skip_special_tokens=True)

    return Tokens(encode, decode, hf.eos_token_id, prefix, hf.decode(hf.eos_token_id), str(path))


# ---------------------------------------------------------------------- the model


def _device(name: str) -> torch.device:
    """lm-eval's CLI asks for cuda:0 by default; like its `hf` model, fall back to the CPU without CUDA."""
    if name.startswith("cuda") and not torch.cuda.is_available():
        log.warning("device %s asked for but CUDA is not available: running on the CPU", name)
        return torch.device("cpu")
    return torch.device(name)


def _batch_size(value: int | str | None) -> int:
    try:
        size = int(value) if value is not None else 8
    except ValueError:
        raise UserError(f"batch_size {value!r}: the llmlab model takes a number (auto is not supported)") from None
    if size < 1:
        raise UserError(f"batch_size must be >= 1, got {size}")
    return size


@register_model(MODEL_NAME)
class LlmlabLM(TemplateLM):
    """lm-eval's `LM` for llmlab models; model_args: path (required), dtype (float32, bfloat16, float16),
    max_length (at most the model's max_seq_len), max_gen_toks (default 256, as the `hf` model),
    prefix_token_id, seed (sampled generations); lm-eval adds batch_size, max_batch_size (for its
    batch_size=auto, which this model refuses: unused) and device."""

    def __init__(self, path: str | None = None, *, device: str | None = "cpu", batch_size: int | str | None = 8,
                 max_batch_size: int | None = None, dtype: str = "float32", max_length: int | None = None,
                 max_gen_toks: int = 256, prefix_token_id: int | None = None, seed: int = 1234,
                 **unknown: Any) -> None:
        super().__init__()
        if unknown:
            raise UserError(f"model_args the llmlab model does not take: {', '.join(sorted(unknown))} (it takes path, "
                            "dtype, max_length, max_gen_toks, prefix_token_id, seed)")
        if not path:
            raise UserError("the llmlab model needs model_args path=DIR (an llmlab or HF model folder)")
        directory = Path(path)
        if dtype not in ("float32", "bfloat16", "float16"):
            raise UserError(f"dtype {dtype!r}: choose float32, bfloat16 or float16")
        if not directory.is_dir():
            raise UserError(f"{path}: no such model folder")
        self._device = _device(device or "cpu")
        if is_llmlab_model(directory):
            model, tok = load_model(directory, device=self._device, dtype=getattr(torch, dtype))
            if tok is None:
                raise UserError(f"{path}: the model folder has no tokenizer.json")
            self.tokens = llmlab_tokens(tok, name=str(directory))
        elif (directory / "config.json").is_file():  # HF: llmlab's model, transformers' tokenizer
            model, _ = from_hf(directory, device=self._device, dtype=getattr(torch, dtype), tokenizer=False)
            self.tokens = hf_tokens(directory, vocab_size=model.cfg.vocab_size)
        else:
            raise UserError(f"{path}: not a model folder (no model.yaml, no HF config.json)")
        self.model: Transformer = model
        limit = model.cfg.max_seq_len
        self._max_length = int(max_length) if max_length is not None else limit
        if not 1 <= self._max_length <= limit:
            raise UserError(f"max_length {self._max_length} must be in [1, the model's max_seq_len {limit}]")
        self._max_gen_toks = int(max_gen_toks)
        self._prefix_id = int(prefix_token_id) if prefix_token_id is not None else self.tokens.prefix_id
        self.batch_size = _batch_size(batch_size)
        self.seed = int(seed)

    # -- what TemplateLM needs to split requests as lm-eval does

    @property
    def eot_token_id(self) -> int:
        return self.tokens.eot_id

    @property
    def prefix_token_id(self) -> int:
        return self._prefix_id

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def max_gen_toks(self) -> int:
        return self._max_gen_toks

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def tokenizer_name(self) -> str:
        return self.tokens.name

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        return self.tokens.encode(string, add_special_tokens)

    # -- loglikelihood

    @torch.inference_mode()
    def _loglikelihood_tokens(self, requests: list[tuple[Any, list[int], list[int]]], disable_tqdm: bool = False,
                              **kwargs: Any) -> list[tuple[float, bool]]:
        """Score (key, context ids, continuation ids) requests; the input is context + continuation without
        its last token, cut from the left to max_length tokens (as the `hf` model does)."""
        inputs, conts = [], []
        for _, context, cont in requests:
            if not context or not cont:
                raise UserError("a loglikelihood request needs a context token and a continuation token")
            inputs.append((list(context) + list(cont))[-(self.max_length + 1):][:-1])
            conts.append(list(cont))
        results: list[tuple[float, bool]] = [(0.0, False)] * len(requests)
        bar = tqdm(total=len(requests), disable=disable_tqdm, desc="llmlab loglikelihood")
        for batch in longest_first([len(x) for x in inputs], self.batch_size):
            T = len(inputs[batch[0]])
            ids = torch.full((len(batch), T), self.eot_token_id, dtype=torch.long)
            mask = torch.zeros(len(batch), T, dtype=torch.bool)
            for row, i in enumerate(batch):
                ids[row, :len(inputs[i])] = torch.tensor(inputs[i])
                mask[row, :len(inputs[i])] = True
            # the head only where a continuation is scored: from the earliest first-scoring position on
            start = min(len(inputs[i]) - len(conts[i]) for i in batch)
            logits = model_logits(self.model, ids.to(self.device), mask.to(self.device), keep=T - start)
            scores = continuation_logprobs(logits, [len(inputs[i]) - start for i in batch], [conts[i] for i in batch])
            for i, score in zip(batch, scores, strict=True):
                results[i] = score
                key = requests[i][0]
                if key is not None:  # rolling windows have none: their document's total is cached instead
                    self.cache_hook.add_partial("loglikelihood", key, score)
            bar.update(len(batch))
        bar.close()
        return results

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        """Each document's log-likelihood: lm-eval's disjoint rolling windows of max_length tokens (the first
        conditioned on the prefix token), all documents' windows batched together, summed per document."""
        windows, owner = [], []
        for n, (text,) in enumerate(req.args for req in requests):
            for context, cont in map(make_disjoint_window, get_rolling_token_windows(
                    token_list=self.tok_encode(text), prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length, context_len=1)):
                windows.append((None, context, cont))
                owner.append(n)
        totals = [0.0] * len(requests)
        for n, (logprob, _) in zip(owner, self._loglikelihood_tokens(windows, disable_tqdm), strict=True):
            totals[n] += logprob
        for req, total in zip(requests, totals, strict=True):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    # -- generation

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        """Requests grouped by their generation settings, each group in batches, longest context first."""
        groups: dict[str, list[int]] = {}
        for i, req in enumerate(requests):
            groups.setdefault(json.dumps(req.args[1], sort_keys=True, default=str), []).append(i)
        out = [""] * len(requests)
        bar = tqdm(total=len(requests), disable=disable_tqdm, desc="llmlab generate_until")
        for members in groups.values():
            texts = self._generate([requests[i].args[0] for i in members], dict(requests[members[0]].args[1]))
            for i, text in zip(members, texts, strict=True):
                out[i] = text
                self.cache_hook.add_partial("generate_until", requests[i].args, text)
            bar.update(len(members))
        bar.close()
        return out

    def _generate(self, contexts: list[str], gen_kwargs: dict[str, Any]) -> list[str]:
        kwargs = normalize_gen_kwargs(gen_kwargs, self.max_gen_toks)
        stops = handle_stop_sequences(kwargs.pop("until", None), eos=self.tokens.eot_text)
        sampling = self._sampling(kwargs)
        room = self.max_length - sampling.max_new_tokens
        if room < 1:
            raise UserError(f"max_gen_toks {sampling.max_new_tokens} leaves no room for a context in "
                            f"max_length {self.max_length}")
        # the context cut from the left to what fits; an empty one conditions on the prefix token
        prompts = [self.tok_encode(c)[-room:] or [self.prefix_token_id] for c in contexts]
        generator = torch.Generator(device=self.device).manual_seed(self.seed)
        out = [""] * len(contexts)
        for batch in longest_first([len(p) for p in prompts], self.batch_size):
            for i, text in zip(batch, self._generate_batch([prompts[i] for i in batch], sampling, stops, generator),
                               strict=True):
                out[i] = postprocess_generated_text(text, stops, None)
        return out

    def _sampling(self, kwargs: dict[str, Any]) -> SamplingConfig:
        """lm-eval's normalized generation kwargs as llmlab's SamplingConfig; an unknown one is an error."""
        max_new = int(kwargs.pop("max_gen_toks"))
        do_sample = bool(kwargs.pop("do_sample", False))
        temperature = float(kwargs.pop("temperature", 0.0) or 0.0)
        top_k, top_p = kwargs.pop("top_k", None), kwargs.pop("top_p", None)
        if kwargs:
            raise UserError(f"generation settings the llmlab model does not support: {', '.join(sorted(kwargs))}")
        return SamplingConfig(max_new_tokens=max_new, temperature=temperature if do_sample else 0.0,
                              top_k=int(top_k) if top_k is not None else None,
                              top_p=float(top_p) if top_p is not None else None,
                              stop_tokens=(self.eot_token_id,))

    def _generate_batch(self, prompts: list[list[int]], sampling: SamplingConfig, stops: list[str],
                        generator: torch.Generator) -> list[str]:
        """The batch's texts, generated until every row has ended (end of text, or a stop string in its
        text so far) or has max_gen_toks tokens."""
        tokens: list[list[int]] = [[] for _ in prompts]
        ended = [False] * len(prompts)
        for step in Engine(self.model, pad_id=self.eot_token_id).stream(prompts, sampling, generator=generator):
            for row, token in enumerate(step):
                if token is None or ended[row]:
                    continue
                tokens[row].append(token)
                ended[row] = token == self.eot_token_id or any(s and s in self.tokens.decode(tokens[row])
                                                               for s in stops)
            if all(ended):
                break
        return [self.tokens.decode(t) for t in tokens]

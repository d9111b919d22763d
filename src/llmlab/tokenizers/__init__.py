"""Tokenizers from first principles: byte-level BPE, with the HF pipeline's stages.

    from llmlab.tokenizers import train_bpe, load_tokenizer

    tok = train_bpe(files=["corpus.txt"], vocab_size=8192, special_tokens=["<|endoftext|>"])
    ids = tok.encode("Hello world")
    tok.save("my_tokenizer")            # tokenizer.json (HF format) + vocab.txt
    tok = load_tokenizer("my_tokenizer")  # also tokenizer.json, .model, .tiktoken, vocab.txt llmlab did not write

Importing this package loads `regex` and nothing heavy.
"""

from llmlab.tokenizers.base import SpecialTokenError, Tokenizer
from llmlab.tokenizers.bpe import BPETokenizer
from llmlab.tokenizers.bpe_train import train_bpe
from llmlab.tokenizers.hf_io import load_tokenizer, save_tokenizer

__all__ = ["BPETokenizer", "SpecialTokenError", "Tokenizer", "load_tokenizer", "save_tokenizer", "train_bpe"]

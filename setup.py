"""The compiled parts of llmlab: the byte-level BPE encoder (src/llmlab/tokenizers/_fastbpe.c) and the
Unigram word search (src/llmlab/tokenizers/_fastunigram.c).

Everything else is in pyproject.toml. The extensions are optional: without a C compiler the install
still succeeds and BPE and Unigram encode in pure Python (bpe.py, unigram.py), the same ids, slower.
"""

from setuptools import Extension, setup

COMMON = "src/llmlab/tokenizers/_fastcommon.h"  # what both share

setup(ext_modules=[
    Extension("llmlab.tokenizers._fastbpe", ["src/llmlab/tokenizers/_fastbpe.c"], depends=[COMMON], optional=True),
    Extension("llmlab.tokenizers._fastunigram", ["src/llmlab/tokenizers/_fastunigram.c"], depends=[COMMON],
              optional=True),
])

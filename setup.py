"""The one compiled part of llmlab: the byte-level BPE encoder (src/llmlab/tokenizers/_fastbpe.c).

Everything else is in pyproject.toml. The extension is optional: without a C compiler the install
still succeeds and BPE encodes in pure Python (bpe.py), the same ids, slower.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("llmlab.tokenizers._fastbpe", ["src/llmlab/tokenizers/_fastbpe.c"], optional=True)])

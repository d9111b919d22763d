"""llmlab: the internals of large language models, built from first principles.

The package root imports nothing heavy: `llmlab --help` and the data and tokenizer
commands must start in well under a second, so torch and friends are imported
inside the modules that need them.
"""

__version__ = "0.1.0"

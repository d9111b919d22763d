"""`python -m llmlab ...` (and `torchrun -m llmlab ...`) run the CLI."""

from llmlab.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

"""`python -m llmlab.eval.lm_eval_cli ARGS`: lm-eval's own command line, with the `llmlab` model registered.

lm-eval 0.4.13 finds a `--model` name only in its registry, which holds the models that lm_eval.models
lists and the classes that were decorated with `register_model` in the running process; it reads no
entry points or plugins. So `lm_eval --model llmlab` cannot find llmlab's model, and this module is
`lm_eval` itself (the same arguments, subcommands and output) after `import llmlab.eval.lm_eval_adapter`:

    python -m llmlab.eval.lm_eval_cli --model llmlab --model_args path=DIR --tasks TASKS --device cpu
    python -m llmlab.eval.lm_eval_cli run ...    python -m llmlab.eval.lm_eval_cli ls tasks --include_path DIR
"""

from __future__ import annotations

import sys

from llmlab.errors import UserError


def main() -> None:
    """lm-eval's own errors stay as it raises them; llmlab's (a missing folder, a bad model_arg) are one
    line `error: ...` and exit code 2, as in `llmlab`."""
    try:
        from lm_eval.__main__ import cli_evaluate  # lm-eval reads sys.argv itself

        import llmlab.eval.lm_eval_adapter  # noqa: F401  (registers the model "llmlab")

        sys.argv[0] = "lm_eval"
        cli_evaluate()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()

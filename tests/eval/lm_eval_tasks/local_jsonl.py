"""The shipped tasks' data loader: a JSONL file beside this one, read without the HF hub or the datasets cache.

lm-eval's own way to read local data, `dataset_path: json` with `dataset_kwargs: {data_files: ...}`, resolves
`data_files` against the working directory, so a task folder would only work from one place; this loader
resolves it against the task folder, so `--include_path tests/eval/lm_eval_tasks` works from anywhere.
"""

import json
from pathlib import Path

import datasets

HERE = Path(__file__).resolve().parent


def load(*, file: str, **_metadata) -> datasets.DatasetDict:
    """{"test": the rows of data/`file`}; lm-eval also passes the task's metadata (version, model args)."""
    path = HERE / "data" / file
    with path.open(encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})

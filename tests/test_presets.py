"""Every YAML preset in configs/ loads into its command's config (unknown keys and bad values fail)."""

from pathlib import Path

import pytest

from llmlab.config import load_config
from llmlab.data.config import GenerateConfig
from llmlab.train.config import PretrainConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PRESETS = {"data": GenerateConfig, "model": PretrainConfig}


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*/*.yaml")), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_preset_loads(path: Path) -> None:
    cfg = load_config(PRESETS[path.parent.name], path)
    if isinstance(cfg, PretrainConfig):
        assert cfg.train.seq_len <= cfg.model.max_seq_len
        assert cfg.model.num_params() > 0

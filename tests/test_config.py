"""llmlab.config: defaults < YAML file < `key=value` overrides, and every way a config can be wrong.

Small dataclasses defined here exercise each rule of the loader one at a time; the real
`GenerateConfig` (nested world / tasks / prefs sections with cross-field checks) checks that
the rules hold on a config that users actually write.

Every error must be a one-line `ConfigError` (a `UserError`, so the CLI prints it without a
traceback) that names the offending key, so each error test goes through `config_error`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Optional

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmlab.config import check, load_config, parse_overrides, to_dict, to_yaml, valid_keys
from llmlab.data.config import GenerateConfig
from llmlab.errors import ConfigError, UserError


@dataclass(frozen=True)
class ModelConfig:
    d_model: int = 64
    n_heads: int = 4

    def __post_init__(self) -> None:
        check(self.n_heads >= 1, f"n_heads must be at least 1, got {self.n_heads}")
        check(self.d_model % self.n_heads == 0, f"n_heads ({self.n_heads}) must divide d_model ({self.d_model})")


@dataclass(frozen=True)
class TrainConfig:
    lr: float = 3e-4
    steps: int = 100
    name: str = "run"
    flag: bool = False
    tags: tuple[str, ...] = ()
    mode: Literal["a", "b"] = "a"
    limit: Optional[int] = None  # noqa: UP045 -- typing.Union on purpose: `note` covers `X | None`
    note: str | None = None


@dataclass(frozen=True)
class ExperimentConfig:
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def load(overrides: tuple[str, ...] | list[str] = (), path: Path | None = None,
         cls: type = ExperimentConfig) -> Any:
    return load_config(cls, path, overrides)


def config_error(overrides: tuple[str, ...] | list[str] = (), path: Path | None = None,
                 cls: type = ExperimentConfig) -> str:
    """Load, expect a ConfigError, check it is a one-line UserError, return its message."""
    with pytest.raises(ConfigError) as info:
        load_config(cls, path, overrides)
    message = str(info.value)
    assert isinstance(info.value, UserError)
    assert "\n" not in message, message
    return message


@pytest.fixture
def yaml_file(tmp_path: Path) -> Any:
    def write(text: str, name: str = "cfg.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write


# --- defaults, YAML, overrides and their precedence --------------------------------------------


def test_defaults_when_nothing_is_given() -> None:
    cfg = load()
    assert cfg == ExperimentConfig()
    assert (cfg.seed, cfg.model.d_model, cfg.model.n_heads) == (0, 64, 4)
    assert cfg.train == TrainConfig()


def test_yaml_file_values(yaml_file: Any) -> None:
    path = yaml_file(
        "seed: 5\n"
        "model: {d_model: 128, n_heads: 8}\n"
        "train:\n"
        "  lr: 0.01\n"
        "  name: big\n"
        "  flag: true\n"
        "  tags: [x, y]\n"
        "  mode: b\n"
        "  limit: 7\n"
    )
    cfg = load(path=path)
    assert cfg == ExperimentConfig(
        seed=5,
        model=ModelConfig(d_model=128, n_heads=8),
        train=TrainConfig(lr=0.01, name="big", flag=True, tags=("x", "y"), mode="b", limit=7),
    )


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n"])
def test_empty_yaml_file_gives_defaults(yaml_file: Any, text: str) -> None:
    assert load(path=yaml_file(text)) == ExperimentConfig()


def test_empty_section_in_yaml_gives_section_defaults(yaml_file: Any) -> None:
    assert load(path=yaml_file("model:\ntrain: {}\n")) == ExperimentConfig()


def test_overrides_beat_yaml_which_beats_defaults(yaml_file: Any) -> None:
    path = yaml_file("seed: 1\nmodel: {d_model: 128}\ntrain: {lr: 0.1, steps: 5}\n")
    cfg = load(["seed=2", "model.n_heads=8", "train.steps=7"], path=path)
    assert cfg.seed == 2  # override over YAML
    assert cfg.model == ModelConfig(d_model=128, n_heads=8)  # YAML and override merged inside a section
    assert cfg.train.lr == 0.1  # YAML over default
    assert cfg.train.steps == 7  # override over YAML
    assert cfg.train.name == "run"  # default


def test_later_override_wins() -> None:
    assert load(["seed=1", "seed=2"]).seed == 2


def test_parse_overrides_nests_dotted_keys() -> None:
    assert parse_overrides(["model.n_heads=4", "train.lr=1e-3", "seed=3"]) == {
        "model": {"n_heads": 4},
        "train": {"lr": "1e-3"},  # YAML 1.1 reads 1e-3 as a string; the float field converts it
        "seed": 3,
    }


def test_valid_keys_lists_sections_and_their_fields() -> None:
    keys = valid_keys(ExperimentConfig)
    assert keys[:4] == ["seed", "model", "model.d_model", "model.n_heads"]
    assert "train.lr" in keys and "train.note" in keys


# --- unknown keys --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "override, named, suggested",
    [
        ("model.n_head=8", "'model.n_head'", "'model.n_heads'"),  # typo in a section
        ("train.setps=3", "'train.setps'", "'train.steps'"),
        ("sed=1", "'sed'", "'seed'"),  # typo at the top level
        ("lr=0.1", "'lr'", "'train.lr'"),  # right name, wrong section (the top level)
        ("n_heads=8", "'n_heads'", "'model.n_heads'"),
    ],
)
def test_unknown_key_names_the_key_and_suggests_the_close_one(override: str, named: str, suggested: str) -> None:
    message = config_error([override])
    assert f"unknown config key {named}" in message
    assert suggested in message.split("did you mean", 1)[1]


@pytest.mark.parametrize(
    "override, suggested",
    [
        ("model.lr=0.1", "'train.lr'"),
        ("train.n_heads=2", "'model.n_heads'"),
        ("train.d_model=128", "'model.d_model'"),
    ],
)
def test_key_in_the_wrong_nested_section_suggests_where_it_belongs(override: str, suggested: str) -> None:
    message = config_error([override])
    assert suggested in message.split("did you mean", 1)[1].split("?")[0]


def test_unknown_key_without_a_close_match_lists_the_valid_keys() -> None:
    message = config_error(["zzzzzz=1"])
    assert "unknown config key 'zzzzzz'" in message
    assert "did you mean" not in message
    assert "seed, model, train" in message


def test_unknown_nested_key_lists_the_keys_of_its_section() -> None:
    message = config_error(["model.qqqqqq=1"])
    assert "unknown config key 'model.qqqqqq'" in message
    assert "valid keys under model: d_model, n_heads" in message


def test_unknown_key_in_yaml_file(yaml_file: Any) -> None:
    message = config_error(path=yaml_file("model:\n  n_head: 8\n"))
    assert "'model.n_head'" in message and "'model.n_heads'" in message


# --- types ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "override, key, expected",
    [
        ("train.steps=abc", "train.steps", "expects int"),  # str for int
        ("train.steps=true", "train.steps", "expects int"),  # subtle: bool is an int subclass; must not pass
        ("train.steps=1.5", "train.steps", "expects int"),  # would lose the .5
        ("model.d_model=false", "model.d_model", "expects int"),
        ("train.flag=1", "train.flag", "expects bool"),  # 1 is not a bool either
        ("train.lr=abc", "train.lr", "expects float"),
        ("train.lr=true", "train.lr", "expects float"),
        ("train.mode=c", "train.mode", "expects one of 'a', 'b'"),
        ("train.limit=abc", "train.limit", "expects int or null"),
        ("train.limit=true", "train.limit", "expects int or null"),
        ("train.tags=[1, 2]", "train.tags[0]", "expects str"),
        ("seed=[1]", "seed", "expects int"),
    ],
)
def test_wrong_type_names_the_key_and_the_expected_type(override: str, key: str, expected: str) -> None:
    message = config_error([override])
    assert message.startswith(f"config key '{key}' {expected}"), message


@pytest.mark.parametrize(
    "text, expected",
    [
        ('train:\n  steps: "10"\n', "config key 'train.steps' expects int, got str '10'"),  # quoted: a string
        ("train:\n  name: 007\n", "config key 'train.name' expects str, got int 7"),  # YAML 1.1 octal
        ("train:\n  tags: {a: 1}\n", "config key 'train.tags' expects list of str, got dict"),
    ],
)
def test_wrong_type_in_yaml_file(yaml_file: Any, text: str, expected: str) -> None:
    assert config_error(path=yaml_file(text)) == expected


def test_section_given_a_scalar() -> None:
    message = config_error(["model=3"])
    assert "'model' must be a mapping" in message


def test_override_below_a_scalar_key_is_rejected() -> None:
    message = config_error(["seed.x=1"])
    assert "'seed'" in message


@pytest.mark.parametrize("overrides", [["model=3", "model.d_model=4"], ["seed=1", "seed.x=2"]])
def test_conflicting_overrides(overrides: list[str]) -> None:
    message = config_error(overrides)
    assert "conflicts" in message


@pytest.mark.parametrize("raw", [".inf", "-.inf", ".nan", "inf", "-inf", "nan", "Infinity", "1e999"])
def test_non_finite_float_is_refused(raw: str) -> None:
    """`train.lr=.inf` used to load and fail only at step 2; no llmlab float field takes inf or nan."""
    message = config_error([f"train.lr={raw}"])
    assert message.startswith("config key 'train.lr' must be a finite number, got "), message


def test_non_finite_float_is_refused_in_yaml_and_in_optional_fields(yaml_file: Any) -> None:
    assert config_error(path=yaml_file("train:\n  lr: .nan\n")).startswith(
        "config key 'train.lr' must be a finite number")
    message = config_error(["prefs.length_bias=.inf"], cls=GenerateConfig)  # float | None
    assert message.startswith("config key 'prefs.length_bias' must be a finite number"), message


def test_no_config_float_field_documents_inf() -> None:
    """If a field ever needs inf, it must say so and the finite check must make an exception for it."""
    import re

    root = Path(__file__).resolve().parents[1] / "src" / "llmlab"
    for path in root.glob("*/config.py"):
        for line in path.read_text(encoding="utf-8").splitlines():
            if re.search(r":\s*float\b", line):
                assert not re.search(r"\binf\b|infinity", line, re.IGNORECASE), f"{path}: {line}"


def test_int_accepted_for_float() -> None:
    cfg = load(["train.lr=1"])
    assert cfg.train.lr == 1.0 and type(cfg.train.lr) is float


def test_integral_float_accepted_for_int() -> None:
    cfg = load(["train.steps=10.0"])
    assert cfg.train.steps == 10 and type(cfg.train.steps) is int


def test_scientific_notation_string_accepted_for_float(yaml_file: Any) -> None:
    """YAML 1.1 has no float without a dot, so `lr: 1e-3` arrives as the string "1e-3"."""
    assert yaml.safe_load("lr: 1e-3") == {"lr": "1e-3"}
    assert load(path=yaml_file("train:\n  lr: 1e-3\n")).train.lr == 1e-3
    assert load(["train.lr=1e-3"]).train.lr == 1e-3
    assert type(load(["train.lr=1e-3"]).train.lr) is float


def test_bool_field() -> None:
    assert load(["train.flag=true"]).train.flag is True
    assert load(["train.flag=false"]).train.flag is False


# --- str fields keep the raw text ----------------------------------------------------------------


@pytest.mark.parametrize("raw", ["007", "true", "null", "1e3", "a=b", "", " spaced ", "[a, b]", "#x", "-"])
def test_str_field_keeps_the_raw_text(raw: str) -> None:
    assert load([f"train.name={raw}"]).train.name == raw


@given(st.text())
def test_str_override_keeps_any_text(text: str) -> None:
    assert load([f"train.name={text}"]).train.name == text


def test_optional_str_field() -> None:
    assert load(["train.note=hello"]).train.note == "hello"
    assert load(["train.note=null"]).train.note is None


@pytest.mark.parametrize("raw", ["007", "2024", "yes"])
def test_optional_str_field_keeps_the_raw_text(raw: str) -> None:
    assert load([f"train.note={raw}"]).train.note == raw


# --- tuples, Literal choices and None ------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("a,b,c", ("a", "b", "c")),
        ("a, b , c", ("a", "b", "c")),
        ("a,,b,", ("a", "b")),
        ("solo", ("solo",)),
        ("[a, b]", ("a", "b")),
        ("[]", ()),
        ("", ()),
        ("007,1", ("007", "1")),
        ("+,-", ("+", "-")),
    ],
)
def test_tuple_from_comma_list_or_yaml_list(raw: str, expected: tuple[str, ...]) -> None:
    assert load([f"train.tags={raw}"]).train.tags == expected


@pytest.mark.parametrize("raw, expected", [("-", ("-",)), ("7", ("7",)), ("on", ("on",))])
def test_tuple_of_str_from_one_item_keeps_the_raw_text(raw: str, expected: tuple[str, ...]) -> None:
    assert load([f"train.tags={raw}"]).train.tags == expected


def test_tuple_from_yaml_file_list(yaml_file: Any) -> None:
    cfg = load(path=yaml_file("train:\n  tags:\n    - x\n    - y\n"))
    assert cfg.train.tags == ("x", "y")
    assert isinstance(cfg.train.tags, tuple)
    assert load(path=yaml_file("train:\n  tags: x, y\n")).train.tags == ("x", "y")  # a YAML string: comma list


def test_literal_choices() -> None:
    assert load(["train.mode=b"]).train.mode == "b"
    message = config_error(["train.mode=B"])
    assert "'a', 'b'" in message and "'B'" in message


@pytest.mark.parametrize("raw", ["null", "~"])
def test_optional_int_accepts_none(raw: str) -> None:
    assert load(["train.limit=5", f"train.limit={raw}"]).train.limit is None


def test_optional_int_from_yaml(yaml_file: Any) -> None:
    assert load(path=yaml_file("train:\n  limit: 3\n")).train.limit == 3
    assert load(path=yaml_file("train:\n  limit: null\n")).train.limit is None


# --- cross-field checks --------------------------------------------------------------------------


def test_cross_field_check_fails_at_load_time_with_the_section() -> None:
    message = config_error(["model.d_model=30"])  # n_heads 4 does not divide 30
    assert message == "model: n_heads (4) must divide d_model (30)"


def test_cross_field_check_from_yaml_file(yaml_file: Any) -> None:
    message = config_error(path=yaml_file("model:\n  d_model: 64\n  n_heads: 6\n"))
    assert message.startswith("model: ") and "n_heads (6)" in message


def test_cross_field_check_runs_on_direct_construction() -> None:
    with pytest.raises(ConfigError, match="must divide"):
        ModelConfig(d_model=30, n_heads=4)


# --- malformed input -----------------------------------------------------------------------------


@pytest.mark.parametrize("item", ["novalue", "=3", " =3"])
def test_malformed_override(item: str) -> None:
    message = config_error([item])
    assert repr(item) in message and "key=value" in message


def test_missing_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.yaml"
    message = config_error(path=path)
    assert str(path) in message and "not found" in message


def test_yaml_path_is_a_folder(tmp_path: Path) -> None:
    message = config_error(path=tmp_path)
    assert message == f"{tmp_path}: is a directory, not a config file"


def test_yaml_file_not_utf8_names_the_byte_and_line(tmp_path: Path) -> None:
    path = tmp_path / "cfg.yaml"
    good = b"seed: 1\ntrain:\n  name: caf"
    path.write_bytes(good + b"\xe9\n")
    assert config_error(path=path) == f"{path}:3: not valid UTF-8 at byte offset {len(good)}"


# --- duplicate keys: PyYAML keeps the last one silently; we refuse the file ---------------------


@pytest.mark.parametrize(
    "text, key, line, first",
    [
        ("seed: 1\nseed: 2\n", "seed", 2, 1),
        ("seed: 1\ntrain:\n  lr: 0.1\n  steps: 3\n  lr: 0.2\n", "lr", 5, 3),  # in a section
        ("train: {lr: 0.1, lr: 0.2}\n", "lr", 1, 1),  # flow mapping: both on one line
        ("train:\n  lr: 0.1\ntrain:\n  steps: 3\n", "train", 3, 1),  # a whole section twice
    ],
)
def test_duplicate_yaml_key_names_the_key_file_and_line(yaml_file: Any, text: str, key: str, line: int,
                                                        first: int) -> None:
    path = yaml_file(text)
    message = config_error(path=path)
    assert message.startswith(f"{path}:{line}: "), message
    assert f"duplicate key '{key}' (first given on line {first})" in message


def test_yaml_merge_key_may_be_overridden(yaml_file: Any) -> None:
    """`<<: *base` then a key of base is YAML's override idiom, not a duplicate."""
    text = "base: &b {lr: 0.1, steps: 5}\ntrain:\n  <<: *b\n  lr: 0.2\n"
    assert yaml.safe_load(text)["train"] == {"lr": 0.2, "steps": 5}
    from llmlab.config import read_yaml

    assert read_yaml(yaml_file(text))["train"] == {"lr": 0.2, "steps": 5}


@pytest.mark.parametrize(
    "text, line",
    [
        ("seed: 1\ntrain:\n  lr: [1, 2\n  steps: 3\n", 4),
        ("seed: 1\nmodel:\n  d_model: 4\n   n_heads: 2\n", 4),
        ("seed: 1\nseed2: @x\n", 2),
    ],
)
def test_invalid_yaml_reports_file_and_line(yaml_file: Any, text: str, line: int) -> None:
    path = yaml_file(text)
    message = config_error(path=path)
    assert message.startswith(f"{path}:{line}: invalid YAML"), message


@pytest.mark.parametrize("text, kind", [("- 1\n- 2\n", "list"), ("3\n", "int"), ("just text\n", "str")])
def test_yaml_top_level_must_be_a_mapping(yaml_file: Any, text: str, kind: str) -> None:
    message = config_error(path=yaml_file(text))
    assert "must be a mapping" in message and kind in message


# --- saving and immutability ---------------------------------------------------------------------


def test_to_dict_is_plain_data() -> None:
    d = to_dict(load(["train.tags=x,y"]))
    assert d["train"]["tags"] == ["x", "y"]
    assert d["model"] == {"d_model": 64, "n_heads": 4}


def test_to_yaml_round_trip(tmp_path: Path) -> None:
    cfg = load(["seed=9", "model.d_model=96", "model.n_heads=3", "train.lr=1e-5", "train.name=007",
                "train.tags=yes,no,-", "train.mode=b", "train.limit=0", "train.note=null", "train.flag=true"])
    path = tmp_path / "saved.yaml"
    path.write_text(to_yaml(cfg), encoding="utf-8")
    assert load(path=path) == cfg


TEXT = st.text(max_size=40)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=60, deadline=None,
          database=None)
@given(
    lr=st.floats(allow_nan=False, allow_infinity=False),
    steps=st.integers(),
    name=TEXT,
    flag=st.booleans(),
    tags=st.lists(TEXT, max_size=4).map(tuple),
    mode=st.sampled_from(["a", "b"]),
    limit=st.none() | st.integers(),
    note=st.none() | TEXT,
)
def test_to_yaml_round_trip_property(tmp_path: Path, lr: float, steps: int, name: str, flag: bool,
                                     tags: tuple[str, ...], mode: Literal["a", "b"], limit: int | None,
                                     note: str | None) -> None:
    cfg = ExperimentConfig(train=TrainConfig(lr=lr, steps=steps, name=name, flag=flag, tags=tags, mode=mode,
                                             limit=limit, note=note))
    path = tmp_path / "saved.yaml"
    path.write_text(to_yaml(cfg), encoding="utf-8")
    assert load(path=path) == cfg


def test_to_yaml_round_trip_keeps_nel(tmp_path: Path) -> None:
    cfg = ExperimentConfig(train=TrainConfig(name="a\x85b"))
    path = tmp_path / "saved.yaml"
    path.write_text(to_yaml(cfg), encoding="utf-8")
    assert load(path=path).train.name == "a\x85b"


def test_config_is_frozen() -> None:
    cfg = load()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.lr = 1.0  # type: ignore[misc]


# --- the real GenerateConfig ---------------------------------------------------------------------


def test_generate_config_with_nested_overrides() -> None:
    cfg = load(["world.n_people=50", "prefs.length_bias=0.8", "tasks.families=arithmetic,reverse",
                "kind=prefs", "n=5"], cls=GenerateConfig)
    assert cfg.world.n_people == 50
    assert cfg.world.n_places == 40  # untouched default in the same section
    assert cfg.prefs.length_bias == 0.8
    assert cfg.tasks.families == ("arithmetic", "reverse")
    assert (cfg.kind, cfg.n, cfg.resolved_split) == ("prefs", 5, "train")


def test_generate_config_defaults_round_trip(tmp_path: Path) -> None:
    cfg = load(["tasks.arith_ops=+,*", "prefs.rejected_kinds=wrong_answer,over_refusal"], cls=GenerateConfig)
    path = tmp_path / "saved.yaml"
    path.write_text(to_yaml(cfg), encoding="utf-8")
    assert load(path=path, cls=GenerateConfig) == cfg


def test_generate_config_unknown_family() -> None:
    message = config_error(["tasks.families=arithmetic,nope"], cls=GenerateConfig)
    assert message.startswith("tasks: unknown task family 'nope'")
    assert "arithmetic" in message.split("families:", 1)[1]


def test_generate_config_label_noise_out_of_range() -> None:
    message = config_error(["prefs.label_noise=0.9"], cls=GenerateConfig)
    assert message == "prefs: label_noise must be in [0, 0.5], got 0.9"


def test_generate_config_top_level_cross_field_check() -> None:
    message = config_error(["chars=100"], cls=GenerateConfig)  # kind is eval by default
    assert message == "chars applies to kind=pretrain only"


def test_generate_config_literal_with_none() -> None:
    assert load(["split=eval"], cls=GenerateConfig).split == "eval"
    assert load(["split=null"], cls=GenerateConfig).split is None
    assert "'train', 'eval' or null" in config_error(["split=test"], cls=GenerateConfig)


def test_generate_config_subtraction_only() -> None:
    assert load(["tasks.arith_ops=-"], cls=GenerateConfig).tasks.arith_ops == ("-",)


def test_generate_config_key_in_the_wrong_section() -> None:
    message = config_error(["world.length_bias=0.8"], cls=GenerateConfig)
    assert "did you mean 'prefs.length_bias'" in message


@dataclass(frozen=True)
class _Inner:
    steps: int = 100
    lr: float = 1e-3


@dataclass(frozen=True)
class _WithPresets:
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"default": {}, "quick": {"n": 5, "inner": {"steps": 2}}}
    preset: Literal["default", "quick"] = "default"
    n: int = 1000
    seed: int = 0
    inner: _Inner = field(default_factory=_Inner)


def test_a_preset_sits_below_the_file_and_the_overrides(tmp_path):
    assert load_config(_WithPresets) == _WithPresets()
    quick = load_config(_WithPresets, overrides=["preset=quick", "seed=3"])
    assert (quick.n, quick.seed, quick.inner.steps, quick.inner.lr) == (5, 3, 2, 1e-3)
    assert load_config(_WithPresets, overrides=["preset=quick", "inner.steps=7"]).inner.steps == 7
    path = tmp_path / "c.yaml"
    path.write_text("preset: quick\nn: 9\n")
    assert load_config(_WithPresets, path).n == 9 and load_config(_WithPresets, path).inner.steps == 2
    path.write_text(to_yaml(quick))  # a saved config loads back to itself
    assert load_config(_WithPresets, path) == quick
    with pytest.raises(ConfigError, match="unknown preset 'fast'; presets: default, quick"):
        load_config(_WithPresets, overrides=["preset=fast"])

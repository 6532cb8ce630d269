import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from textwrap import dedent
from typing import Literal

import pytest

from store.config import (
    ConfigError,
    config_from_dict,
    config_hash,
    config_to_dict,
    dump_config,
    load_config,
)


@dataclass(frozen=True)
class StoreConfig:
    root: str
    storage_options: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Stage:
    name: Literal["sft", "grpo", "distill"]
    lr: float = 1e-5
    steps: int = 100


@dataclass(frozen=True)
class RunConfig:
    seed: int = field(metadata={"doc": "seed for every random choice"})
    store: StoreConfig
    stages: list[Stage] = field(default_factory=list)
    out_dir: Path = Path("runs")
    tags: tuple[str, ...] = ()
    weights: dict[str, float] = field(default_factory=dict)
    max_tokens: int | None = None
    greedy: bool = False
    mode: Literal["toy", "full"] = "toy"


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def load_error(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(path, RunConfig)
    return info.value


def test_loads_nested_values_and_fills_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "run.yaml",
        """
        seed: 7
        store:
          root: work/store
        stages:
          - name: sft
            lr: 0.001
          - name: grpo
        tags: [a, b]
        weights: {math: 2, code: 0.5}
        max_tokens: 64
        """,
    )
    cfg = load_config(path, RunConfig)
    assert cfg == RunConfig(
        seed=7,
        store=StoreConfig(root="work/store"),
        stages=[Stage("sft", lr=0.001), Stage("grpo")],
        tags=("a", "b"),
        weights={"math": 2.0, "code": 0.5},
        max_tokens=64,
    )
    assert cfg.out_dir == Path("runs") and cfg.mode == "toy" and cfg.greedy is False
    assert isinstance(cfg.weights["math"], float) and isinstance(cfg.tags, tuple)


def test_unknown_key_names_file_line_allowed_keys_and_suggestion(tmp_path: Path) -> None:
    path = write(tmp_path, "run.yaml", "seed: 1\nstore:\n  rot: x\n")
    err = load_error(path)
    assert (err.path, err.key, err.line) == (str(path), "store.rot", 3)
    assert str(err) == (
        f"{path}:3: store.rot: unknown key; allowed keys: root, storage_options. "
        "Did you mean 'root'?"
    )


def test_wrong_type_names_value(tmp_path: Path) -> None:
    path = write(tmp_path, "run.yaml", "store: {root: r}\n\nseed: abc\n")
    err = load_error(path)
    assert str(err) == f"{path}:3: seed: expected int, got str 'abc'"
    assert (err.key, err.line) == ("seed", 3)


def test_error_inside_list_of_dataclasses_has_indexed_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "run.yaml",
        """
        seed: 1
        store: {root: r}
        stages:
          - name: sft
          - name: grpo
          - name: distill
            lr: fast
        """,
    )
    err = load_error(path)
    assert err.key == "stages[2].lr" and err.line == 7
    assert str(err) == f"{path}:7: stages[2].lr: expected float, got str 'fast'"


def test_missing_required_key_names_key_file_and_doc(tmp_path: Path) -> None:
    path = write(tmp_path, "run.yaml", "store: {root: r}\n")
    err = load_error(path)
    assert err.key == "seed" and err.path == str(path)
    assert str(err) == f"{path}: seed: missing required key (seed for every random choice)"


def test_missing_nested_key_points_at_parent_line(tmp_path: Path) -> None:
    path = write(tmp_path, "run.yaml", "seed: 1\nstore:\n  storage_options: {}\n")
    err = load_error(path)
    assert str(err) == f"{path}:2: store.root: missing required key"


def test_missing_file() -> None:
    with pytest.raises(ConfigError) as info:
        load_config("configs/does-not-exist.yaml", RunConfig)
    assert str(info.value) == "config file not found: configs/does-not-exist.yaml"
    assert info.value.key is None and info.value.path == "configs/does-not-exist.yaml"


def test_yaml_syntax_error_has_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "run.yaml", "seed: 1\nstore:\n  root: [unclosed\ngreedy: true\n")
    err = load_error(path)
    assert err.path == str(path) and err.line is not None and err.line >= 3
    assert str(err).startswith(f"{path}:{err.line}: invalid YAML: ")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", "an empty file"), ("- 1\n- 2\n", "a list"), ("42\n", "a single value")],
)
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str, expected: str) -> None:
    err = load_error(write(tmp_path, "run.yaml", text))
    assert f"the top level must be a mapping, got {expected}" in str(err)


def test_duplicate_key_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "run.yaml", "seed: 1\nstore: {root: r}\nseed: 2\n")
    assert str(load_error(path)) == f"{path}:3: seed: duplicate key"


def test_literal_rejection_lists_allowed_values(tmp_path: Path) -> None:
    path = write(tmp_path, "run.yaml", "seed: 1\nstore: {root: r}\nstages:\n  - name: sfft\n")
    err = load_error(path)
    assert str(err) == (
        f"{path}:4: stages[0].name: expected one of 'sft', 'grpo', 'distill', "
        "got str 'sfft'. Did you mean 'sft'?"
    )


def test_int_is_accepted_for_float_and_bool_is_not_accepted_as_int() -> None:
    cfg = config_from_dict(
        {"seed": 1, "store": {"root": "r"}, "stages": [{"name": "sft", "lr": 1}]}, RunConfig
    )
    assert cfg.stages[0].lr == 1.0 and isinstance(cfg.stages[0].lr, float)
    with pytest.raises(ConfigError, match=r"^seed: expected int, got bool True$"):
        config_from_dict({"seed": True, "store": {"root": "r"}}, RunConfig)
    with pytest.raises(ConfigError, match=r"greedy: expected bool, got int 1$"):
        config_from_dict({"seed": 1, "store": {"root": "r"}, "greedy": 1}, RunConfig)
    with pytest.raises(ConfigError, match=r"stages\[0\]\.lr: expected float, got bool"):
        config_from_dict(
            {"seed": 1, "store": {"root": "r"}, "stages": [{"name": "sft", "lr": False}]},
            RunConfig,
        )


def test_optional_accepts_null_and_checks_the_inner_type() -> None:
    base = {"seed": 1, "store": {"root": "r"}}
    assert config_from_dict({**base, "max_tokens": None}, RunConfig).max_tokens is None
    with pytest.raises(ConfigError, match="max_tokens: expected int, got str 'many'"):
        config_from_dict({**base, "max_tokens": "many"}, RunConfig)


def test_config_from_dict_errors_name_source_but_no_line() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict({"seed": 1, "store": {"root": 3}}, RunConfig, source="<cli>")
    assert str(info.value) == "<cli>: store.root: expected str, got int 3"
    assert info.value.line is None and info.value.path == "<cli>"


def test_uri_strings_pass_through_untouched(tmp_path: Path) -> None:
    uris = [
        "s3://bucket/r1/store",
        "gs://b/x",
        "az://c/d",
        "abfss://fs@acct.dfs.core/p",
        "file:///x",
    ]
    for uri in uris:
        path = write(tmp_path, "run.yaml", f"seed: 1\nstore:\n  root: {uri}\n")
        cfg = load_config(path, RunConfig)
        assert cfg.store.root == uri
        assert config_to_dict(cfg)["store"]["root"] == uri


@dataclass(frozen=True)
class PathsConfig:
    out_dir: Path = Path("runs")
    root: str = field(default="store", metadata={"path": True})
    files: list[str] = field(default_factory=list, metadata={"path": True})
    label: str = "plain/text"


def test_relative_paths_are_relative_to_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sub = tmp_path / "configs"
    sub.mkdir()
    path = write(
        sub,
        "run.yaml",
        "out_dir: runs/toy\nroot: ../work/store\nfiles: [a.jsonl, /abs/b.jsonl]\nlabel: x/y\n",
    )
    monkeypatch.chdir(tmp_path / "configs")  # the working directory does not matter
    cfg = load_config(path, PathsConfig)
    assert cfg.out_dir == sub / "runs/toy"
    assert cfg.root == str(tmp_path / "work/store")
    assert cfg.files == [str(sub / "a.jsonl"), "/abs/b.jsonl"]
    assert cfg.label == "x/y"  # an unmarked string is not a path
    # Values from the environment were typed in a shell: relative to the working directory.
    monkeypatch.setenv("R1F_TEST_ROOT", "mine")
    env = write(sub, "env.yaml", "root: ${R1F_TEST_ROOT:-fallback}\nfiles: [s3://b/x]\n")
    assert load_config(env, PathsConfig).root == "mine"
    monkeypatch.delenv("R1F_TEST_ROOT")
    cfg = load_config(env, PathsConfig)
    assert cfg.root == str(sub / "fallback") and cfg.files == ["s3://b/x"]
    # Defaults and in-memory configs come from no file and stay as they are.
    assert load_config(write(sub, "empty.yaml", "label: z\n"), PathsConfig).root == "store"
    assert config_from_dict({"root": "r"}, PathsConfig).root == "r"


def test_inherited_paths_are_relative_to_the_file_that_wrote_them(tmp_path: Path) -> None:
    write(tmp_path, "base.yaml", "root: data/store\n")
    (tmp_path / "runs").mkdir()
    child = write(tmp_path / "runs", "child.yaml", "extends: ../base.yaml\nout_dir: out\n")
    cfg = load_config(child, PathsConfig)
    assert cfg.root == str(tmp_path / "data/store")
    assert cfg.out_dir == tmp_path / "runs/out"


def test_extends_deep_merges_child_over_parent(tmp_path: Path) -> None:
    write(
        tmp_path,
        "base.yaml",
        """
        seed: 1
        store:
          root: s3://bucket/store
          storage_options: {region: eu}
        tags: [base]
        weights: {math: 1, code: 1}
        """,
    )
    (tmp_path / "runs").mkdir()
    write(tmp_path / "runs", "mid.yaml", "extends: ../base.yaml\nweights: {code: 3}\n")
    child = write(
        tmp_path / "runs",
        "child.yaml",
        "extends: mid.yaml\nstore:\n  storage_options: {profile: dev}\ntags: [child]\n",
    )
    cfg = load_config(child, RunConfig)
    assert cfg.seed == 1
    assert cfg.store == StoreConfig("s3://bucket/store", {"region": "eu", "profile": "dev"})
    assert cfg.tags == ("child",)  # lists replace, they do not concatenate
    assert cfg.weights == {"math": 1.0, "code": 3.0}


def test_errors_in_inherited_values_point_at_the_parent_file(tmp_path: Path) -> None:
    base = write(tmp_path, "base.yaml", "seed: 1\nstore: {root: r}\n\ngreedy: maybe\n")
    child = write(tmp_path, "child.yaml", "extends: base.yaml\nseed: 2\n")
    err = load_error(child)
    assert (err.path, err.line, err.key) == (str(base), 4, "greedy")


def test_extends_cycle_names_the_files(tmp_path: Path) -> None:
    a = write(tmp_path, "a.yaml", "extends: b.yaml\nseed: 1\n")
    b = write(tmp_path, "b.yaml", "seed: 2\nextends: a.yaml\n")
    err = load_error(a)
    assert err.key == "extends" and err.path == str(b) and err.line == 2
    assert f"extends: cycle: {a} -> {b} -> {tmp_path / 'a.yaml'}" in str(err)


def test_extends_missing_parent_points_at_the_extends_line(tmp_path: Path) -> None:
    child = write(tmp_path, "child.yaml", "seed: 1\nextends: nope.yaml\n")
    err = load_error(child)
    assert str(err) == f"{child}:2: extends: config file not found: {tmp_path / 'nope.yaml'}"


def test_env_interpolation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("R1F_BUCKET", "my-bucket")
    monkeypatch.setenv("R1F_SEED", "42")
    monkeypatch.delenv("R1F_UNSET", raising=False)
    path = write(
        tmp_path,
        "run.yaml",
        """
        seed: ${R1F_SEED}
        store:
          root: s3://${R1F_BUCKET}/${R1F_UNSET:-store}
        out_dir: ${R1F_UNSET:-runs/default}
        greedy: ${R1F_UNSET:-true}
        """,
    )
    cfg = load_config(path, RunConfig)
    assert cfg.seed == 42
    assert cfg.store.root == "s3://my-bucket/store"
    # A default written in the file is a path in the file: relative to it.
    assert cfg.out_dir == path.parent / "runs/default" and cfg.greedy is True


def test_env_value_is_not_expanded_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("R1F_ROOT", "${HOME}")
    cfg = config_from_dict({"seed": 1, "store": {"root": "${R1F_ROOT}"}}, RunConfig)
    assert cfg.store.root == "${HOME}"


def test_unset_env_variable_names_key_and_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("R1F_UNSET", raising=False)
    path = write(tmp_path, "run.yaml", "seed: 1\nstore:\n  root: s3://${R1F_UNSET}/x\n")
    err = load_error(path)
    assert err.key == "store.root" and err.line == 3
    assert "environment variable R1F_UNSET is not set" in str(err)


def test_env_value_of_wrong_type_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("R1F_SEED", "abc")
    with pytest.raises(ConfigError, match=r"^seed: expected int, got str 'abc'$"):
        config_from_dict({"seed": "${R1F_SEED}", "store": {"root": "r"}}, RunConfig)


def test_malformed_env_reference() -> None:
    with pytest.raises(ConfigError, match=r"^store\.root: malformed \$\{\.\.\.\} reference"):
        config_from_dict({"seed": 1, "store": {"root": "${R1F_ROOT"}}, RunConfig)


def test_post_init_value_error_is_located(tmp_path: Path) -> None:
    @dataclass(frozen=True)
    class Sampling:
        temperature: float = 1.0

        def __post_init__(self) -> None:
            if self.temperature < 0:
                raise ValueError("temperature must be >= 0")

    @dataclass(frozen=True)
    class Gen:
        sampling: Sampling

    path = write(tmp_path, "gen.yaml", "sampling:\n  temperature: -1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, Gen)
    assert str(info.value) == f"{path}:1: sampling: temperature must be >= 0"


def test_schema_must_be_a_dataclass() -> None:
    with pytest.raises(TypeError):
        config_from_dict({}, dict)


def test_dump_load_round_trip(tmp_path: Path) -> None:
    cfg = RunConfig(
        seed=3,
        store=StoreConfig("gs://b/store", {"token": "anon"}),
        stages=[Stage("sft", lr=3e-4, steps=10), Stage("grpo", lr=1e-6)],
        out_dir=Path("runs/x"),
        tags=("a", "1.0", "yes"),
        weights={"math": 0.7},
        max_tokens=None,
        greedy=True,
        mode="full",
    )
    text = dump_config(cfg)
    assert text.splitlines()[0] == "seed: 3"  # field order, not sorted
    path = write(tmp_path, "dumped.yaml", text)
    # A relative path read back is relative to the file it was dumped to.
    assert load_config(path, RunConfig) == replace(cfg, out_dir=tmp_path / "runs/x")
    assert config_to_dict(cfg)["out_dir"] == "runs/x"
    assert config_to_dict(cfg)["tags"] == ["a", "1.0", "yes"]


def test_dump_fills_in_defaults() -> None:
    cfg = config_from_dict({"seed": 1, "store": {"root": "r"}}, RunConfig)
    assert list(config_to_dict(cfg)) == [
        "seed",
        "store",
        "stages",
        "out_dir",
        "tags",
        "weights",
        "max_tokens",
        "greedy",
        "mode",
    ]
    assert "storage_options: {}" in dump_config(cfg)


def test_config_hash_is_stable_and_tracks_values() -> None:
    data = {"seed": 1, "store": {"root": "r"}, "weights": {"a": 1, "b": 2}}
    first = config_hash(config_from_dict(data, RunConfig))
    reordered = {"weights": {"b": 2, "a": 1}, "store": {"root": "r"}, "seed": 1}
    assert config_hash(config_from_dict(reordered, RunConfig)) == first
    assert len(first) == 16 and int(first, 16) >= 0
    changed = config_hash(config_from_dict({**data, "seed": 2}, RunConfig))
    assert changed != first
    # Lineage stores this hash, so its definition is pinned: canonical JSON, sha256, 16 hex.
    canonical = (
        '{"greedy":false,"max_tokens":null,"mode":"toy","out_dir":"runs","seed":1,'
        '"stages":[],"store":{"root":"r","storage_options":{}},"tags":[],'
        '"weights":{"a":1.0,"b":2.0}}'
    )
    assert first == hashlib.sha256(canonical.encode()).hexdigest()[:16]


def test_yaml_merge_keys_may_be_overridden(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "run.yaml",
        """
        seed: 1
        store: {root: r}
        stages:
          - &sft {name: sft, lr: 0.1, steps: 5}
          - {<<: *sft, lr: 0.2}
        """,
    )
    cfg = load_config(path, RunConfig)
    assert cfg.stages == [Stage("sft", 0.1, 5), Stage("sft", 0.2, 5)]


def test_recursive_alias_is_a_config_error(tmp_path: Path) -> None:
    path = write(tmp_path, "run.yaml", "seed: 1\ntags: &t [*t]\n")
    assert str(load_error(path)) == f"{path}: invalid YAML: recursive alias"


def test_an_anchor_with_merge_keys_can_be_reused(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "run.yaml",
        """
        seed: 1
        store: {root: r}
        stages:
          - &base {name: sft, lr: 0.1}
          - &grpo {<<: *base, name: grpo}
          - *grpo
          - {<<: [*grpo, *base], steps: 3}
        """,
    )
    cfg = load_config(path, RunConfig)
    grpo = Stage("grpo", 0.1)
    assert cfg.stages == [Stage("sft", 0.1), grpo, grpo, Stage("grpo", 0.1, 3)]


def test_fixed_length_tuples_check_length_and_item_types() -> None:
    @dataclass(frozen=True)
    class Window:
        span: tuple[int, float]

    assert config_from_dict({"span": [1, 2]}, Window).span == (1, 2.0)
    with pytest.raises(ConfigError, match=r"^span: expected a list of 2 items, got 3$"):
        config_from_dict({"span": [1, 2, 3]}, Window)
    with pytest.raises(ConfigError, match=r"^span\[0\]: expected int, got str 'a'$"):
        config_from_dict({"span": ["a", 2]}, Window)


def test_unsupported_field_type_is_a_schema_bug() -> None:
    @dataclass(frozen=True)
    class Odd:
        items: set[int]

    with pytest.raises(TypeError, match="unsupported field type"):
        config_from_dict({"items": [1]}, Odd)

"""Config base: validation messages name the field; JSON and YAML files load."""

import pytest
from pydantic import Field

from infercore.config import Config, ConfigError


class PoolConfig(Config):
    block_size: int = Field(16, gt=0)
    num_blocks: int | None = None
    dtype: str = "bfloat16"


def test_defaults_and_assignment_validation():
    cfg = PoolConfig()
    assert cfg.block_size == 16
    with pytest.raises(ValueError, match="block_size"):
        cfg.block_size = -1


def test_errors_name_field_and_value():
    with pytest.raises(ConfigError) as info:
        PoolConfig(block_size=0, colour="red")
    text = str(info.value)
    assert "block_size: Input should be greater than 0 (got 0)" in text
    assert "colour: Extra inputs are not permitted" in text


@pytest.mark.parametrize("suffix", [".json", ".yaml", ".yml"])
def test_round_trip_through_files(tmp_path, suffix):
    path = tmp_path / f"pool{suffix}"
    PoolConfig(block_size=32, num_blocks=7).to_file(path)
    assert PoolConfig.from_file(path) == PoolConfig(block_size=32, num_blocks=7)


def test_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("block_size: -3\n")
    expected = r"(?s)PoolConfig \(from .*bad.yaml\).*block_size: .* greater than 0 \(got -3\)"
    with pytest.raises(ConfigError, match=expected):
        PoolConfig.from_file(bad)
    broken = tmp_path / "broken.json"
    broken.write_text("{block_size: ")
    with pytest.raises(ConfigError, match="not valid JSON"):
        PoolConfig.from_file(broken)
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        PoolConfig.from_file(listing)
    with pytest.raises(ConfigError, match=r"\.json, \.yaml or \.yml"):
        PoolConfig.from_file(tmp_path / "pool.toml")


class OuterConfig(Config):
    pool: PoolConfig = PoolConfig()
    name: str = "outer"


def test_nested_config_errors_name_the_path(tmp_path):
    with pytest.raises(ConfigError, match=r"(?s)pool: .*block_size: .* greater than 0"):
        OuterConfig.from_dict({"pool": {"block_size": -1}})
    assert OuterConfig.from_dict({"pool": {"block_size": 8}}).pool.block_size == 8


def test_empty_yaml_gives_defaults(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert PoolConfig.from_file(empty) == PoolConfig()

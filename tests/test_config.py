"""Config loading: unknown keys and wrong types are errors that name the key."""

from __future__ import annotations

import pytest

from dynrec.config import load_config
from dynrec.errors import ConfigError


def test_defaults_and_overrides():
    cfg = load_config(None, ["train.epochs=3", "model.head_hidden=[8, 8]", "train.lr=0.01"])
    assert cfg.train.epochs == 3 and cfg.model.head_hidden == [8, 8] and cfg.train.lr == 0.01
    assert cfg.data.dataset == "ml-100k"


def test_int_is_accepted_for_float():
    assert load_config(None, ["train.lr=1"]).train.lr == 1.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("train:\n  epoch: 3\n", "train: unknown key 'epoch'"),
        ("trian:\n  epochs: 3\n", "unknown key 'trian'"),
        ("train:\n  epochs: three\n", "train.epochs: 'three' is not a valid"),
        ("model:\n  head_hidden: [8, x]\n", "model.head_hidden[1]"),
        ("train:\n  epochs: true\n", "train.epochs: True is not a valid"),
        ("train: [1, 2]\n", "config.yaml.train: expected a mapping"),
    ],
)
def test_bad_config_names_the_key(tmp_path, text, expected):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert expected in str(error.value)
    assert str(path) in str(error.value)


def test_missing_and_invalid_yaml_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_every_shipped_config_loads():
    from pathlib import Path

    configs = sorted(Path(__file__).resolve().parents[1].glob("configs/*/*.yaml"))
    assert len(configs) >= 15  # 5 datasets x 3 backbones
    for path in configs:
        cfg = load_config(path)
        assert cfg.model.name in ("sasrec", "gru4rec", "din")
        assert cfg.data.dataset == path.parent.name
        assert path.stem.startswith(cfg.model.name)

"""Run configuration: dataclasses loaded from YAML, where an unknown key or a wrong type is an error."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from dynrec.errors import ConfigError


@dataclass
class DataConfig:
    dataset: str = "ml-100k"  # a registered name (ml-100k, ml-1m, beauty, douban-book, douban-music) or a file path
    data_dir: str | None = None  # folder of non-embedded datasets; None: $DYNREC_DATA, else ../shared/data
    format: str | None = None  # atomic | sequence | ratings; None: from the registry or the file name
    rating_threshold: float | None = None  # keep ratings >= this; None: the dataset's standard (usually all)
    min_user_count: int | None = None  # None: the dataset's standard filter
    min_item_count: int | None = None  # None: the dataset's standard filter (ml-1m: 5)
    iterative_kcore: bool = False  # repeat the count filters until stable (true k-core); slower, changes stats


@dataclass
class ModelConfig:
    name: str = "sasrec"  # sasrec | gru4rec | din
    hidden_size: int = 64  # embedding and state size d; the paper's setting is 32
    num_layers: int = 2  # transformer blocks (SASRec) or GRU layers (GRU4Rec); unused by DIN
    num_heads: int = 1  # attention heads (SASRec)
    dropout: float = 0.1  # on embeddings and inside blocks; more regularises small data, slows fitting
    max_len: int = 200  # history length read by the encoder; longer sees more, costs O(L^2) in SASRec
    head_hidden: list[int] = field(default_factory=lambda: [64])  # hidden sizes of the head MLP
    head_activation: str = "relu"  # relu | gelu | tanh | sigmoid
    attention_hidden: list[int] = field(default_factory=lambda: [80, 40])  # DIN's attention MLP
    dynamic: bool = False  # DUET: a generator makes each sample's head weights from its recent items
    generator_source: str = "gru"  # gru: its own GRU over the recent window | backbone: the encoder's state (cheaper)
    generator_form: str = "full"  # full: W = W0 + G(z), every entry generated | lowrank: W = W0 + U S(z) V, K x K core
    generator_rank: int = 8  # K of the low-rank form; cost O(in K + K^2 + K out) per sample instead of O(in out)
    generator_window: int = 10  # recent items the gru source reads (the DUET setting: 10)
    code_size: int = 32  # size of the code z every generated weight is a linear function of
    generator_dropout: float = 0.0  # dropout on z while training: fewer of a window's details reach its head


@dataclass
class TrainConfig:
    mode: str = "sequence"  # sequence: every position of a user's sequence in one pass; window: a sample per item
    cover: str = "last"  # sequence mode: last: each user's last max_len targets (the reference SASRec loop)
    # | all: the whole training history, cut into windows of max_len targets (every target once per epoch)
    loss: str = "ce"  # ce: softmax over all items (strong); bce: k sampled negatives (the paper's setting)
    num_negatives: int = 4  # negatives per positive for bce
    batch_size: int = 128  # users (sequence mode) or samples (window mode) per step
    lr: float = 1e-3
    weight_decay: float = 0.0
    grad_clip: float = 5.0  # max gradient norm; 0 disables
    batching: str = "length"  # length: batches of similar lengths (little padding, fast) | random: any users
    loss_scale: str = "batch"  # batch: mean per batch (length-bucketed batches weigh every user alike)
    # | uniform: every target position weighs the same, as in randomly drawn batches
    epochs: int = 200  # upper bound; early stopping usually ends sooner
    patience: int = 20  # validation checks without improvement before stopping (or the next learning-rate decay)
    lr_decays: int = 0  # times a stalled run restarts from its best weights at lr_decay_factor x its learning
    # rate (fresh optimizer state) before stopping: a step schedule driven by validation
    lr_decay_factor: float = 0.1
    eval_every: int = 1  # epochs between validation checks
    select_metric: str = "ndcg@10"  # validation metric that selects the checkpoint
    select_protocol: str = "full"  # full | sampled, for selection on validation
    seed: int = 0
    init_seed: int | None = None  # seed of the initial weights (default: seed); another seed with the same init_seed
    # starts from the same weights and differs only in data order, negatives and dropout
    device: str = "auto"  # auto (cuda when present) | cpu | cuda
    threads: int = 0  # torch CPU threads; 0 keeps torch's default
    init_from: str | None = None  # a static run dir whose weights start the (dynamic) model's backbone
    freeze_backbone: bool = False  # train only the generator: generated heads stay in the static model's space
    select_start: bool = False  # validate the starting weights as epoch 0 too: a run from init_from that never
    # beats its start on validation returns its start


@dataclass
class EvalConfig:
    protocols: list[str] = field(default_factory=lambda: ["full", "sampled"])  # reported on test
    ks: list[int] = field(default_factory=lambda: [5, 10, 20])
    sampled_negatives: int = 99  # the paper's protocol: target + 99 items the user never interacted with
    sample_seed: int = 2025  # fixed so every model on a dataset sees the same candidates
    batch_size: int = 512  # users per evaluation batch


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    out_dir: str | None = None  # None: runs/<dataset>-<model>-seed<seed>

    def run_dir(self) -> Path:
        if self.out_dir:
            return Path(self.out_dir)
        dataset = Path(self.data.dataset).name.split(".")[0]
        return Path("runs") / f"{dataset}-{self.model.name}-seed{self.train.seed}"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _check_value(value: object, annotation: object, where: str) -> object:
    hints = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    if value is None:
        if type(None) in hints:
            return None
        raise ConfigError(f"{where}: null is not allowed, expected {annotation}")
    for hint in hints:
        origin = typing.get_origin(hint)
        if origin is list and isinstance(value, list):
            (inner,) = typing.get_args(hint)
            return [_check_value(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if hint is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if hint in (str, bool) and type(value) is hint:
            return value
    raise ConfigError(f"{where}: {value!r} is not a valid {annotation}")


def _build(cls: type, values: dict, where: str) -> object:
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping, got {values!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(f"{where}: unknown key {key!r} (expected one of {', '.join(fields)})")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value, f"{where}.{key}")
        else:
            kwargs[key] = _check_value(value, hint, f"{where}.{key}")
    return cls(**kwargs)


def config_from_dict(values: dict, where: str = "config") -> RunConfig:
    """Build a RunConfig, rejecting unknown keys and mistyped values with their dotted path."""
    return _build(RunConfig, values, where)


def apply_overrides(values: dict, overrides: list[str]) -> dict:
    """Apply `section.key=value` strings (values parsed as YAML) to a config mapping."""
    for item in overrides:
        path, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r}: expected section.key=value")
        node = values
        *parents, last = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = yaml.safe_load(raw)
    return values


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML run config (or the defaults), then apply overrides."""
    values: dict = {}
    where = "config"
    if path is not None:
        where = str(path)
        try:
            values = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: not valid YAML: {error}") from None
    return config_from_dict(apply_overrides(values, overrides or []), where)

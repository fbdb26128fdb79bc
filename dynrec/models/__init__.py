"""Models: one file per encoder, a functional head, and the registry that builds them from a config."""

from dynrec.config import ModelConfig
from dynrec.errors import ConfigError
from dynrec.models.base import DotProductRecommender, Recommender
from dynrec.models.din import DIN
from dynrec.models.dynamic import DynamicRecommender
from dynrec.models.gru4rec import GRU4Rec
from dynrec.models.sasrec import SASRec

MODELS: dict[str, type[Recommender]] = {"sasrec": SASRec, "gru4rec": GRU4Rec, "din": DIN}


def build_model(cfg: ModelConfig, n_items: int) -> Recommender:
    """Instantiate the configured model for a catalogue of n_items (ids 1..n_items, 0 = padding);
    with `dynamic: true`, the backbone wrapped with a head generator."""
    if cfg.name not in MODELS:
        raise ConfigError(f"model.name: unknown model {cfg.name!r} (expected one of {', '.join(MODELS)})")
    backbone = MODELS[cfg.name](n_items, cfg)
    return DynamicRecommender(backbone, cfg) if cfg.dynamic else backbone


__all__ = [
    "DIN", "MODELS", "DotProductRecommender", "DynamicRecommender", "GRU4Rec", "Recommender", "SASRec", "build_model",
]

"""dynrec: static, dynamic (generated-head) and CKI-spliced sequential recommenders."""

from dynrec.api import demo, evaluate_checkpoint, train
from dynrec.config import RunConfig, load_config
from dynrec.data import load_dataset

__all__ = ["RunConfig", "demo", "evaluate_checkpoint", "load_config", "load_dataset", "train"]
__version__ = "0.1.0"

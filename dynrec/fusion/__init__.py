"""CKI fusion: compatibility assessment, hard/soft splicing of n models, the online CKI layer, baselines.

See docs/cki.md. Offline: `fuse(state_dicts, method, tensors)`; online: `OnlineCKI(dynamic_model)`;
learned f_L/f_G: `dynrec.fusion.learned`.
"""

from dynrec.fusion.baselines import OutputEnsemble
from dynrec.fusion.compatibility import LearnedCompatibility, assess, histogram_entropy
from dynrec.fusion.offline import METHODS, SELECTIONS, FusionResult, fuse
from dynrec.fusion.online import OnlineCKI

__all__ = [
    "METHODS", "SELECTIONS", "FusionResult", "LearnedCompatibility", "OnlineCKI", "OutputEnsemble", "assess", "fuse",
    "histogram_entropy",
]

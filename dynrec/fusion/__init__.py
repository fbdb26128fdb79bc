"""CKI fusion: compatibility assessment, hard/soft splicing of n models, the online CKI layer, baselines.

See docs/cki.md. Offline: `fuse(state_dicts, method, tensors)`; learned f_L/f_G:
`dynrec.fusion.learned`.
"""

from dynrec.fusion.baselines import OutputEnsemble
from dynrec.fusion.compatibility import LearnedCompatibility, assess, histogram_entropy
from dynrec.fusion.offline import METHODS, SELECTIONS, FusionResult, fuse

__all__ = [
    "METHODS", "SELECTIONS", "FusionResult", "LearnedCompatibility", "OutputEnsemble", "assess", "fuse",
    "histogram_entropy",
]

"""CKI fusion: compatibility assessment, hard/soft splicing of n models, the online CKI layer, baselines.

See docs/cki.md. Offline: `fuse(state_dicts, method, tensors)`; online: `OnlineCKI(dynamic_model)` and
`OnlineBaseline(dynamic_model, method, **options)` (both `OnlineMerge`s); learned f_L/f_G: `dynrec.fusion.learned`.
"""

from dynrec.fusion.baselines import OutputEnsemble
from dynrec.fusion.compatibility import LearnedCompatibility, assess, histogram_entropy
from dynrec.fusion.offline import METHODS, SELECTIONS, FusionResult, fuse
from dynrec.fusion.online import OnlineCKI
from dynrec.fusion.online_baselines import OnlineBaseline
from dynrec.fusion.online_merge import OnlineMerge

__all__ = [
    "METHODS", "SELECTIONS", "FusionResult", "LearnedCompatibility", "OnlineBaseline", "OnlineCKI", "OnlineMerge",
    "OutputEnsemble", "assess", "fuse", "histogram_entropy",
]

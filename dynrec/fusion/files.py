"""Reading the state dicts to fuse and writing the fused checkpoint; nothing is ever unpickled.

Inputs: a dynrec checkpoint directory, a `.safetensors` file, or a torch file that
`torch.load(weights_only=True)` accepts holding a state dict or a mapping with a 'state_dict' key.
RecBole's own trainer checkpoints pickle its Config object, which weights_only refuses by design; export
their weights to safetensors first (see `read_state_dict`'s error message).
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from dynrec.checkpoint import CONFIG, IDMAP, WEIGHTS, atomic_write, write_json
from dynrec.errors import FusionError
from dynrec.fusion.offline import FusionResult

MAPS = "fusion_maps.safetensors"  # per spliced tensor, the (n, *shape) maps: how much each model counted where
INFO = "fusion.json"  # the method, its options, the inputs and per-tensor summaries
RECBOLE_EXPORT = (
    "export its weights once, from a file you trust: python -c \"import torch; from safetensors.torch import "
    "save_file; save_file(torch.load('{path}', weights_only=False)['state_dict'], 'model.safetensors')\""
)


def is_dynrec_checkpoint(path: Path) -> bool:
    """Whether `path` is a directory holding a dynrec checkpoint's weights, config and id map."""
    return path.is_dir() and all((path / name).is_file() for name in (WEIGHTS, CONFIG, IDMAP))


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a dynrec checkpoint dir, a .safetensors file, or a weights-only torch file (RecBole-style
    {'state_dict': ...} included); a file that would need unpickling arbitrary objects is refused."""
    path = Path(path)
    if path.is_dir():
        if not is_dynrec_checkpoint(path):
            raise FusionError(f"{path}: not a dynrec checkpoint (needs {WEIGHTS}, {CONFIG}, {IDMAP})")
        return load_file(str(path / WEIGHTS))
    if not path.is_file():
        raise FusionError(f"{path}: no such file or checkpoint directory")
    if path.suffix == ".safetensors":
        return load_file(str(path))
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError) as error:
        raise FusionError(f"{path}: torch.load(weights_only=True) refused it ({type(error).__name__}): it holds "
                          "pickled Python objects (RecBole's trainer saves its Config object with the weights), and "
                          "dynrec never unpickles those; " + RECBOLE_EXPORT.format(path=path)) from None
    state = payload.get("state_dict", payload) if isinstance(payload, dict) else None
    if not isinstance(state, dict) or not all(isinstance(t, torch.Tensor) for t in state.values()):
        raise FusionError(f"{path}: expected a state dict (name -> tensor) or a mapping with a 'state_dict' key")
    return state


def check_same_catalogue(paths: list[Path]) -> None:
    """dynrec checkpoints must share their id maps, or their item embeddings mean different items."""
    first = json.loads((paths[0] / IDMAP).read_text())
    for path in paths[1:]:
        other = json.loads((path / IDMAP).read_text())
        for key in ("items", "users"):
            if other.get(key) != first.get(key):
                raise FusionError(f"{path / IDMAP}: its {key} differ from {paths[0] / IDMAP}; fused models must "
                                  "be trained on the same preprocessed dataset")


def write_fused(out: str | Path, result: FusionResult, sources: list[Path]) -> Path:
    """Write the fused weights (and, for dynrec inputs, model A's config.json and idmap.json) into `out`,
    plus the maps and the summary; every file is written atomically. Returns the weights' path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {name: t.detach().contiguous().cpu() for name, t in result.state_dict.items()}
    atomic_write(out / WEIGHTS, lambda tmp: save_file(tensors, str(tmp)))
    if is_dynrec_checkpoint(sources[0]):
        for name in (CONFIG, IDMAP):
            atomic_write(out / name, lambda tmp, name=name: shutil.copyfile(sources[0] / name, tmp))
    maps = {name: m.contiguous().cpu() for name, m in result.maps.items()}
    if maps:
        atomic_write(out / MAPS, lambda tmp: save_file(maps, str(tmp)))
    write_json(out / INFO, {**result.info, "models": [str(p) for p in sources]})
    return out / WEIGHTS

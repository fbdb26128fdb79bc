"""Checkpoints: weights as safetensors, config and id maps as JSON, training state for resuming.

Every file is written to a temporary name and renamed, so an interrupted write never leaves half a file.
Nothing is unpickled: weights load through safetensors, training state through torch.load(weights_only=True).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from dynrec.config import RunConfig, config_from_dict
from dynrec.data.preprocess import SequenceData
from dynrec.errors import CheckpointError
from dynrec.models import Recommender, build_model

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
IDMAP = "idmap.json"
STATE = "trainer_state.pt"
TEST_OUTCOMES = "test_per_user.npz"  # a run's per-user test metrics, "<protocol>/<metric>" -> (n_users,)
LOCK = "train.lock"  # held by the process training in a run dir


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold a run dir for one training process; another one gets a CheckpointError naming the holder. The OS
    drops the lock when its holder exits, killed or not, so no stale lock outlives a crash."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / LOCK, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            raise CheckpointError(f"{run_dir}: process {holder} is training this run; wait for it to finish "
                                  "or use another out_dir") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield


def wait_for_run(run_dir: Path) -> None:
    """Block while another process trains in run_dir; return at once when none does."""
    if (run_dir / LOCK).is_file():
        with open(run_dir / LOCK) as handle:
            fcntl.flock(handle, fcntl.LOCK_SH)  # granted once the trainer's exclusive lock is gone


def atomic_write(path: Path, write, replace: bool = True) -> bool:
    """Call write(tmp_path) then rename tmp_path to path (same directory, so the rename is atomic). With
    replace=False an existing path is kept (a hard link never overwrites) and False is returned."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)
        if replace:
            os.replace(tmp, path)
            return True
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_arrays(path: Path, arrays: dict[str, np.ndarray], replace: bool = True) -> bool:
    """Write named arrays as a compressed .npz, atomically; see atomic_write for `replace`."""
    def save(tmp: Path) -> None:
        with tmp.open("wb") as f:  # a file object: np.savez would append .npz to a path
            np.savez_compressed(f, **arrays)

    return atomic_write(path, save, replace)


def write_json(path: Path, payload: dict, replace: bool = True) -> bool:
    """Write payload as indented JSON, atomically; see atomic_write for `replace`."""
    return atomic_write(path, lambda tmp: tmp.write_text(json.dumps(payload, indent=2, default=_json_default)
                                                         + "\n"), replace)


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def save_weights(path: Path, model: torch.nn.Module) -> None:
    tensors = {name: t.detach().contiguous().cpu() for name, t in model.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp)))


def save_checkpoint(directory: Path, model: Recommender, cfg: RunConfig, data: SequenceData) -> None:
    """Write the model weights, its run config and the raw-id maps (so raw ids round-trip)."""
    directory.mkdir(parents=True, exist_ok=True)
    save_weights(directory / WEIGHTS, model)
    write_json(directory / CONFIG, {"config": cfg.to_dict(), "n_items": data.n_items, "dataset": data.stats()})
    write_json(directory / IDMAP, {"users": data.user_ids.tolist(), "items": data.item_ids.tolist()})


def load_checkpoint(directory: str | Path, device: str = "cpu") -> tuple[Recommender, RunConfig, dict]:
    """Rebuild the model from config.json and load its safetensors weights; returns (model, config, id maps)."""
    directory = Path(directory)
    for name in (WEIGHTS, CONFIG, IDMAP):
        if not (directory / name).is_file():
            raise CheckpointError(f"{directory}: missing {name}; not a dynrec checkpoint")
    meta = json.loads((directory / CONFIG).read_text())
    cfg = config_from_dict(meta["config"], str(directory / CONFIG))
    model = build_model(cfg.model, meta["n_items"])
    load_weights(model, directory / WEIGHTS)
    idmap = json.loads((directory / IDMAP).read_text())
    return model.to(device).eval(), cfg, idmap


def load_weights(model: torch.nn.Module, path: Path) -> None:
    """Load safetensors weights, naming the first missing, unexpected or mis-shaped tensor."""
    load_tensors(model, load_file(str(path)), path)


def load_tensors(model: torch.nn.Module, tensors: dict[str, torch.Tensor], where: str | Path) -> None:
    """Load a state dict into model after checking it has exactly the model's tensor names and shapes."""
    expected = model.state_dict()
    for name, tensor in expected.items():
        if name not in tensors:
            raise CheckpointError(f"{where}: missing tensor {name!r}")
        if tensors[name].shape != tensor.shape:
            raise CheckpointError(f"{where}: tensor {name!r} has shape {tuple(tensors[name].shape)}, "
                                  f"expected {tuple(tensor.shape)}")
    extra = sorted(set(tensors) - set(expected))
    if extra:
        raise CheckpointError(f"{where}: unexpected tensor {extra[0]!r}")
    model.load_state_dict(tensors)


def save_state(path: Path, state: dict) -> None:
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_state(path: Path) -> dict:
    return torch.load(path, weights_only=True)

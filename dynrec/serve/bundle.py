"""Serving bundles: a checkpoint frozen for inference, with a manifest that pins every file and tensor.

A bundle directory holds `model.safetensors`, `config.json` (model config, catalogue size, online CKI
options), `idmap.json` (raw item ids; position = internal id), `popularity.json` (training interactions
per item, for the empty-history fallback) and `manifest.json` (sha256 and size of every file; name,
shape, dtype and sha256 of every tensor). It is written in a temporary sibling directory and renamed
into place, so a reader never sees half a bundle. Loading checks every tensor against the manifest and
every file's hash, and refuses the bundle naming the first tensor or file that does not match.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from dynrec.checkpoint import load_checkpoint, load_tensors
from dynrec.config import ModelConfig, config_from_dict
from dynrec.data.preprocess import SequenceData
from dynrec.errors import CheckpointError
from dynrec.fusion.compatibility import BINS
from dynrec.fusion.online import OnlineCKI
from dynrec.models import DynamicRecommender, Recommender, build_model

FORMAT, VERSION = "dynrec-bundle", 1
WEIGHTS, CONFIG, IDMAP, POPULARITY, MANIFEST = (
    "model.safetensors", "config.json", "idmap.json", "popularity.json", "manifest.json")
FILES = (WEIGHTS, CONFIG, IDMAP, POPULARITY)
MODES = ("static", "dynamic", "cki")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tensor_sha256(tensor: torch.Tensor) -> str:
    """sha256 of a tensor's raw bytes in C order (any dtype)."""
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    return hashlib.sha256(flat.view(torch.uint8).numpy().tobytes()).hexdigest()


def tensor_entry(tensor: torch.Tensor) -> dict:
    return {"shape": list(tensor.shape), "dtype": str(tensor.dtype).removeprefix("torch."),
            "sha256": tensor_sha256(tensor)}


def training_popularity(data: SequenceData) -> np.ndarray:
    """(N + 1,) how often each item occurs in the training part of the sequences (validation and test
    targets left out, as the model never saw them); index 0 (padding) is 0."""
    position = np.arange(data.n_interactions) - np.repeat(data.offsets[:-1], data.lengths)
    train_length = np.repeat(data.split_end("train") - data.offsets[:-1], data.lengths)
    return np.bincount(data.items[position < train_length], minlength=data.n_items + 1)


def _write_json(path: Path, payload: dict) -> None:
    path.write_text(json.dumps(payload, indent=1) + "\n")


def export_bundle(
    checkpoint: str | Path,
    out: str | Path,
    data: SequenceData,
    hard: bool = False,
    bins: int = BINS,
    force: bool = False,
) -> dict:
    """Write `checkpoint` as a serving bundle at `out` (atomically); `data` is the run's dataset, which
    must have the checkpoint's item ids, and gives the popularity counts. Returns the manifest."""
    checkpoint, out = Path(checkpoint), Path(out)
    model, cfg, idmap = load_checkpoint(checkpoint)
    if list(data.item_ids) != list(idmap["items"]):
        raise CheckpointError(f"{checkpoint / 'idmap.json'}: its {len(idmap['items']) - 1} items differ from "
                              f"dataset {data.name!r} ({data.n_items} items); export needs the run's own dataset")
    if out.exists() and not force:
        raise CheckpointError(f"{out}: already exists; pass --force to replace it")
    tensors = {name: t.detach().contiguous().cpu() for name, t in model.state_dict().items()}
    config = {
        "format": FORMAT,
        "version": VERSION,
        "model": cfg.to_dict()["model"],
        "n_items": model.n_items,
        "dynamic": isinstance(model, DynamicRecommender),
        "cki": {"hard": hard, "bins": bins},  # how mode "cki" splices (parameter-free f_L and f_G)
        "dataset": data.stats(),
        "source_checkpoint": str(checkpoint.resolve()),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        save_file(tensors, str(tmp / WEIGHTS))
        _write_json(tmp / CONFIG, config)
        _write_json(tmp / IDMAP, {"items": list(idmap["items"])})
        _write_json(tmp / POPULARITY, {"counted": "training interactions (validation and test targets excluded)",
                                       "counts": training_popularity(data).tolist()})
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "files": {name: {"sha256": file_sha256(tmp / name), "bytes": (tmp / name).stat().st_size}
                      for name in FILES},
            "tensors": {name: tensor_entry(t) for name, t in sorted(tensors.items())},
        }
        _write_json(tmp / MANIFEST, manifest)
        for name in (*FILES, MANIFEST):
            os.chmod(tmp / name, 0o644)
            with open(tmp / name, "rb") as f:
                os.fsync(f.fileno())
        os.chmod(tmp, 0o755)
        _replace_directory(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return manifest


def _replace_directory(new: Path, target: Path) -> None:
    """Rename `new` to `target`; an existing target is moved aside first and removed after the swap."""
    if not target.exists():
        os.rename(new, target)
        return
    old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-"))
    os.rename(target, old / "bundle")
    os.rename(new, target)
    shutil.rmtree(old)


@dataclass
class Bundle:
    """A verified bundle, ready to serve: the model, its catalogue and the popularity fallback."""

    path: Path
    model: Recommender
    model_config: ModelConfig
    item_ids: list[str]  # raw id of each internal id; [0] is padding
    item_index: dict[str, int]  # raw id -> internal id (1..N)
    popularity: torch.Tensor  # (N + 1,) float training counts; [0] = -inf so padding is never recommended
    hard: bool
    bins: int
    manifest_sha256: str

    @property
    def n_items(self) -> int:
        return len(self.item_ids) - 1

    @property
    def max_len(self) -> int:
        return self.model.max_len

    @property
    def modes(self) -> tuple[str, ...]:
        """The modes this bundle answers: all three for a dynamic model, static only otherwise."""
        return MODES if isinstance(self.model, DynamicRecommender) else ("static",)

    def scorers(self) -> dict[str, Recommender]:
        """mode -> the model that scores it: the static head, the generated head, or the online CKI splice."""
        if not isinstance(self.model, DynamicRecommender):
            return {"static": self.model}
        online = OnlineCKI(self.model, hard=self.hard, bins=self.bins).eval()
        return {"static": self.model.backbone, "dynamic": self.model, "cki": online}


def _read_json(path: Path) -> dict:
    try:
        payload = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing; not a complete dynrec bundle") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return payload


def verify_tensors(tensors: dict[str, torch.Tensor], expected: dict[str, dict], where: Path) -> None:
    """Every tensor named in the manifest is present with its shape, dtype and hash, and no other is."""
    for name, entry in expected.items():
        if name not in tensors:
            raise CheckpointError(f"{where}: tensor {name!r} listed in {MANIFEST} is missing")
        found = tensor_entry(tensors[name])
        for key in ("shape", "dtype", "sha256"):
            if found[key] != entry.get(key):
                raise CheckpointError(f"{where}: tensor {name!r} has {key} {found[key]}, "
                                      f"{MANIFEST} expects {entry.get(key)}")
    extra = sorted(set(tensors) - set(expected))
    if extra:
        raise CheckpointError(f"{where}: tensor {extra[0]!r} is not listed in {MANIFEST}")


def load_bundle(path: str | Path) -> Bundle:
    """Read and verify a bundle; raises CheckpointError naming the first tensor or file that differs."""
    path = Path(path)
    manifest = _read_json(path / MANIFEST)
    if (manifest.get("format"), manifest.get("version")) != (FORMAT, VERSION):
        raise CheckpointError(f"{path / MANIFEST}: format {manifest.get('format')!r} version "
                              f"{manifest.get('version')!r}, expected {FORMAT!r} version {VERSION}")
    files = manifest.get("files", {})
    for name in FILES:
        if name not in files:
            raise CheckpointError(f"{path / MANIFEST}: does not list {name}")
        if not (path / name).is_file():
            raise CheckpointError(f"{path / name}: missing; not a complete dynrec bundle")
    try:
        tensors = load_file(str(path / WEIGHTS))
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{path / WEIGHTS}: not a readable safetensors file ({error})") from None
    verify_tensors(tensors, manifest.get("tensors", {}), path / WEIGHTS)
    for name in FILES:
        digest = file_sha256(path / name)
        if digest != files[name].get("sha256"):
            raise CheckpointError(f"{path / name}: sha256 {digest} does not match {MANIFEST} "
                                  f"({files[name].get('sha256')}); the file changed after export")
    config = _read_json(path / CONFIG)
    model_config = config_from_dict({"model": config["model"]}, str(path / CONFIG)).model
    model = build_model(model_config, config["n_items"])
    load_tensors(model, tensors, path / WEIGHTS)
    items = [str(i) for i in _read_json(path / IDMAP)["items"]]
    counts = _read_json(path / POPULARITY)["counts"]
    if len(items) != config["n_items"] + 1 or len(counts) != len(items):
        raise CheckpointError(f"{path}: idmap.json has {len(items)} ids and popularity.json {len(counts)} counts, "
                              f"expected n_items + 1 = {config['n_items'] + 1}")
    popularity = torch.tensor(counts, dtype=torch.float32)
    popularity[0] = float("-inf")
    return Bundle(
        path=path,
        model=model.eval(),
        model_config=model_config,
        item_ids=items,
        item_index={raw: index for index, raw in enumerate(items) if index > 0},
        popularity=popularity,
        hard=bool(config["cki"]["hard"]),
        bins=int(config["cki"]["bins"]),
        manifest_sha256=file_sha256(path / MANIFEST),
    )

"""Fusing two real (tiny) RecBole SASRec models: built from RecBole's own Config and model class, saved the
ways RecBole users have them, fused with `dynrec fuse`, loaded back into RecBole's SASRec and scored."""

from __future__ import annotations

import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file

from dynrec import api
from dynrec.errors import FusionError

recbole = pytest.importorskip("recbole")
from recbole.config import Config  # noqa: E402
from recbole.data.interaction import Interaction  # noqa: E402
from recbole.model.sequential_recommender import SASRec  # noqa: E402

N_ITEMS = 21  # RecBole counts the padding item 0


class _Catalogue:
    """What RecBole's SequentialRecommender reads from a dataset: the number of item ids."""

    def num(self, field: str) -> int:
        return N_ITEMS


@pytest.fixture(scope="module")
def recbole_config():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Config(model="SASRec", dataset="tiny", config_dict={
            "hidden_size": 16, "inner_size": 16, "n_layers": 1, "n_heads": 1, "MAX_ITEM_LIST_LENGTH": 8,
            "loss_type": "CE", "train_neg_sample_args": None, "device": "cpu", "use_gpu": False})


def _sasrec(config, seed: int) -> SASRec:
    torch.manual_seed(seed)
    return SASRec(config, _Catalogue()).eval()


def test_two_recbole_sasrec_models_fuse_into_a_loadable_one(recbole_config, tmp_path):
    a, b = _sasrec(recbole_config, 0), _sasrec(recbole_config, 1)
    torch.save({"state_dict": a.state_dict()}, tmp_path / "a.pth")  # a weights-only torch file
    save_file(b.state_dict(), str(tmp_path / "b.safetensors"))  # and a safetensors export
    info = api.fuse_checkpoints([tmp_path / "a.pth", tmp_path / "b.safetensors"], "cki", tmp_path / "fused",
                                tensors="head+encoder")
    assert "item_embedding.weight" not in info["spliced"] and "position_embedding.weight" in info["spliced"]
    assert not (tmp_path / "fused" / "config.json").exists()  # RecBole keeps its own config
    fused = _sasrec(recbole_config, 2)
    fused.load_state_dict(load_file(str(tmp_path / "fused" / "model.safetensors")))
    state = fused.state_dict()
    assert torch.equal(state["item_embedding.weight"], a.state_dict()["item_embedding.weight"])
    layer = "trm_encoder.layer.0.feed_forward.dense_1.weight"
    assert not torch.equal(state[layer], a.state_dict()[layer]) and not torch.equal(state[layer], b.state_dict()[layer])
    batch = Interaction({"item_id_list": torch.tensor([[3, 4, 5, 0, 0, 0, 0, 0], [1, 2, 3, 4, 5, 6, 7, 8]]),
                         "item_length": torch.tensor([3, 8])})
    with torch.no_grad():
        scores = fused.full_sort_predict(batch)
    assert scores.shape == (2, N_ITEMS) and torch.isfinite(scores).all()


def test_recbole_trainer_checkpoints_are_refused_with_the_way_out(recbole_config, tmp_path):
    a, b = _sasrec(recbole_config, 0), _sasrec(recbole_config, 1)
    torch.save({"config": recbole_config, "state_dict": a.state_dict()}, tmp_path / "a.pth")  # as RecBole's Trainer
    torch.save({"state_dict": b.state_dict()}, tmp_path / "b.pth")
    with pytest.raises(FusionError, match=r"a\.pth: torch\.load\(weights_only=True\) refused it.*RecBole.*save_file"):
        api.fuse_checkpoints([tmp_path / "a.pth", tmp_path / "b.pth"], "average", tmp_path / "out", tensors="all")
    with pytest.raises(FusionError, match="no tensor matches tensors='head'"):
        api.fuse_checkpoints([tmp_path / "b.pth", tmp_path / "b.pth"], "cki", tmp_path / "out")

"""Data: readers, dataset registry, preprocessing and batching."""

from dynrec.data.preprocess import SequenceData, build_sequences, load_dataset
from dynrec.data.readers import read_interactions
from dynrec.data.registry import DATASETS, resolve

__all__ = ["DATASETS", "SequenceData", "build_sequences", "load_dataset", "read_interactions", "resolve"]

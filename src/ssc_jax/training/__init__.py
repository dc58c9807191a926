"""Training the zoo's networks: datasets, augmentation, the optax loop and checkpoints."""

from ssc_jax.training.augment import normalize_images
from ssc_jax.training.checkpoints import list_checkpoints, load_checkpoint
from ssc_jax.training.datasets import analysis_indices, load_dataset, stratified_subset
from ssc_jax.training.trainer import TrainConfig, train

__all__ = [
    "TrainConfig",
    "analysis_indices",
    "list_checkpoints",
    "load_checkpoint",
    "load_dataset",
    "normalize_images",
    "stratified_subset",
    "train",
]

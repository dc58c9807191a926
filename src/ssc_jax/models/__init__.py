"""Flax NNX model zoo: VGG, CIFAR ResNet, Wide-ResNet, DenseNet and a small CNN, whose
convolution and block outputs are named taps (see :mod:`ssc_jax.models.taps`)."""

from ssc_jax.models.registry import create_model, list_models

__all__ = ["create_model", "list_models"]

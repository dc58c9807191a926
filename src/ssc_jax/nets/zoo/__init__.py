"""Flax NNX model zoo: VGG, CIFAR ResNet, Wide-ResNet, DenseNet and a small CNN, whose
convolution and block outputs are named taps (see :mod:`ssc_jax.nets.taps`)."""

from ssc_jax.nets.zoo.registry import create_model, list_models

__all__ = ["create_model", "list_models"]

"""Spreading SSC work over several devices with JAX's own sharding.

Two kinds of work split cleanly, and ``ssc_gram`` uses whichever the batch allows:

- independent problems (layers, checkpoints): the leading axis of a chunk is sharded, each
  device solves its problems, and every answer equals the single-device one;
- the rows of one big problem: each device holds the whole factor and solves its own block
  of rows, a separate LASSO set with its own mu and stopping test, so the answer equals the
  single-device one to the solver's tolerance.

On a CPU, ``XLA_FLAGS=--xla_force_host_platform_device_count=4`` gives four devices to test
with. In a ``jax.distributed`` job the default mesh holds the devices of every process (see
``distributed.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

_AXIS = "devices"


def device_mesh(devices: Sequence[jax.Device] | None) -> Mesh | None:
    """A one-axis mesh over ``devices`` (default: ``jax.devices()``, every device of every
    process), or None for one device.

    Raises:
      ValueError: for an empty sequence.
    """
    devices = jax.devices() if devices is None else list(devices)
    if not devices:
        raise ValueError("devices must name at least one device")
    if len(devices) == 1:
        return None
    return Mesh(np.asarray(devices), (_AXIS,))


def leading(mesh: Mesh) -> NamedSharding:
    """The sharding that splits an array's leading axis over the devices of ``mesh``."""
    return NamedSharding(mesh, PartitionSpec(_AXIS))


def shard_leading(tree, mesh: Mesh):
    """Place every array of ``tree`` on ``mesh``, split along its leading axis."""
    return jax.device_put(tree, leading(mesh))


def replicate(tree, mesh: Mesh):
    """Place a full copy of every array of ``tree`` on each device of ``mesh``."""
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))

"""A Flax NNX vision transformer on real CIFAR-10 test images, through the Flax door.

The ViT is built here (a 4x4 patch embedding, which is its one ``nnx.Conv``, a class token,
four encoder blocks and a head on the class token) and trained briefly on CIFAR-10 training
images (``--epochs 0`` leaves it untrained). Its
default selection, ``layers="conv"``, would give one layer, so the door takes its repeated
blocks and says so in one line; their token outputs (n, 65, D) are pooled to one vector per
input (mean over the tokens). The analysis of N stratified test images is written as the
usual output folder, whose report this script summarises::

    python examples/flax_vit.py --data ../shared/data --n 300 --out /tmp/vit_report
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import ssc_jax
from ssc_jax.nets.capture import layer_selection


class Block(nnx.Module):
    """A pre-norm transformer encoder block."""

    def __init__(self, width: int, heads: int, rngs: nnx.Rngs):
        self.norm1 = nnx.LayerNorm(width, rngs=rngs)
        self.attention = nnx.MultiHeadAttention(
            num_heads=heads, in_features=width, decode=False, rngs=rngs
        )
        self.norm2 = nnx.LayerNorm(width, rngs=rngs)
        self.mlp_in = nnx.Linear(width, 2 * width, rngs=rngs)
        self.mlp_out = nnx.Linear(2 * width, width, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x + self.attention(self.norm1(x))
        return x + self.mlp_out(nnx.gelu(self.mlp_in(self.norm2(x))))


class ViT(nnx.Module):
    """Patches of 4x4 pixels embedded by a strided convolution, a class token, ``depth``
    blocks, a head on the class token."""

    def __init__(self, rngs: nnx.Rngs, width: int = 64, depth: int = 4, classes: int = 10):
        self.patches = nnx.Conv(3, width, (4, 4), strides=(4, 4), rngs=rngs)
        self.cls = nnx.Param(jnp.zeros((1, 1, width)))
        self.position = nnx.Param(0.02 * jax.random.normal(rngs.params(), (1, 65, width)))
        self.blocks = nnx.List([Block(width, 4, rngs) for _ in range(depth)])
        self.norm = nnx.LayerNorm(width, rngs=rngs)
        self.head = nnx.Linear(width, classes, rngs=rngs)

    def __call__(self, images: jax.Array) -> jax.Array:
        x = self.patches(images)
        x = x.reshape(x.shape[0], -1, x.shape[-1])
        cls = jnp.broadcast_to(self.cls[...], (x.shape[0], 1, x.shape[-1]))
        x = jnp.concatenate([cls, x], axis=1) + self.position[...]
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x)[:, 0])


def train(model: ViT, images: np.ndarray, labels: np.ndarray, epochs: int, seed: int) -> None:
    """Adam on cross-entropy in batches of 128, ``epochs`` passes over the images."""
    optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, x, y):
        def loss(model):
            return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()

        value, grads = nnx.value_and_grad(loss)(model)
        optimizer.update(model, grads)
        return value

    rng = np.random.default_rng(seed)
    for epoch in range(epochs):
        order = rng.permutation(len(images))
        losses = [
            float(step(model, optimizer, images[i], labels[i]))
            for i in np.array_split(order, len(order) // 128)
        ]
        print(f"epoch {epoch + 1}: training loss {np.mean(losses):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/data", help="folder of the CIFAR-10 zips")
    parser.add_argument("--n", type=int, default=300, help="analysis inputs N")
    parser.add_argument("--train", type=int, default=10_000, help="training images")
    parser.add_argument("--epochs", type=int, default=3, help="training passes; 0: untrained")
    parser.add_argument("--out", default="/tmp/flax_vit_report")
    args = parser.parse_args()
    data = Path(args.data)
    mean, std = np.array([0.491, 0.482, 0.447]), np.array([0.247, 0.243, 0.262])

    start = time.perf_counter()
    model = ViT(nnx.Rngs(0))
    if args.epochs:
        images, labels, _ = ssc_jax.load_dataset(str(data / "cifar10-train.zip"), "train")
        keep = ssc_jax.analysis_indices(np.asarray(labels), args.train, seed=1)
        train_images = np.asarray(ssc_jax.normalize_images(images[keep], mean, std))
        train(model, train_images, np.asarray(labels)[keep], args.epochs, seed=0)

    test, test_labels, class_names = ssc_jax.load_dataset(str(data / "cifar10-test.zip"), "test")
    chosen = ssc_jax.analysis_indices(np.asarray(test_labels), args.n, seed=0)
    shown = np.asarray(test)[chosen]
    x = np.asarray(ssc_jax.normalize_images(shown, mean, std))
    names, grams = ssc_jax.activation_grams(model, x)  # says which layers it took, one line
    probs = ssc_jax.predict(model, x)
    result = ssc_jax.analyze_grams(
        names,
        grams,
        np.asarray(test_labels)[chosen],
        probs=probs,
        images=shown,
        class_names=list(class_names),
        source="a 4-block ViT (Flax NNX)",
        tokens="mean",
        layer_selection=layer_selection(model, inputs=x[:1]),
        progress=False,
        out=args.out,
    )
    html = (Path(args.out) / "report.html").read_text()
    print(f"done in {time.perf_counter() - start:.0f} s; layers: {', '.join(names)}")
    print("title:", re.search(r"<h1>(.*?)</h1>", html).group(1))
    for term, value in re.findall(r"<dt>(.*?)</dt><dd>(.*?)</dd>", html):
        print(f"  {term}: {value}")
    for heading in re.findall(r"<h2>(.*?)</h2>", html)[:3]:
        print("section:", heading)
    print("modularity per layer:", np.round(result.modularity, 4).tolist())
    print("settings:", dict(re.findall(r"<tr><td>(analysis\.[a-z_]+)</td><td>(.*?)</td>", html)))


if __name__ == "__main__":
    main()

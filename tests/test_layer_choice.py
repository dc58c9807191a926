"""Layer selection on a framework-neutral list of modules: repeated blocks, messages, warning."""

import warnings

import pytest

from ssc_jax.nets.layer_choice import (
    blocks_description,
    entry,
    no_match_message,
    repeated_blocks,
    warn_if_one_layer,
)


def vit(depth: int):
    """A timm-style ViT: patch embedding, ``depth`` blocks whose attention holds two Identity
    norms in a row, a head."""
    modules = [entry("patch_embed", "PatchEmbed"), entry("patch_embed.proj", "Conv2d")]
    modules.append(entry("blocks", "Sequential"))
    for i in range(depth):
        block = f"blocks.{i}"
        modules += [entry(block, "Block"), entry(f"{block}.norm1", "LayerNorm")]
        modules += [entry(f"{block}.attn", "Attention"), entry(f"{block}.attn.qkv", "Linear")]
        modules += [entry(f"{block}.attn.q_norm", "Identity")]
        modules += [entry(f"{block}.attn.k_norm", "Identity")]
        modules += [entry(f"{block}.attn.proj", "Linear"), entry(f"{block}.mlp", "Mlp")]
        modules += [entry(f"{block}.mlp.fc1", "Linear"), entry(f"{block}.mlp.fc2", "Linear")]
    return [*modules, entry("norm", "LayerNorm"), entry("head", "Linear")]


def test_a_vits_blocks_are_its_transformer_layers():
    assert repeated_blocks(vit(3)) == ["blocks.0", "blocks.1", "blocks.2"]


def test_composite_blocks_come_before_longer_runs_of_single_operations():
    # Two blocks, each with runs of two Identity and two Linear (fc1, fc2) of its own.
    assert repeated_blocks(vit(2)) == ["blocks.0", "blocks.1"]
    flat = [entry(f"drop{i}", "Dropout") for i in range(4)]
    assert repeated_blocks([*flat, *vit(2)]) == ["blocks.0", "blocks.1"]


def test_a_lone_container_does_not_outrank_a_run_of_two_plain_layers():
    # An MLP whose layers sit in one container beside two plain layers of its own.
    modules = [entry("body", "Sequential"), entry("body.0", "Linear"), entry("body.1", "ReLU")]
    modules += [entry("fc1", "Linear"), entry("fc2", "Linear")]
    assert repeated_blocks(modules) == ["fc1", "fc2"]
    # Alone, a container is still chosen over a lone plain layer.
    assert repeated_blocks([entry("body", "Sequential"), entry("body.0", "Linear")]) == ["body"]


def test_longest_run_then_shallowest_then_first():
    modules = [entry("stage", "Stage"), entry("stage.a", "Unit"), entry("stage.a.x", "Linear")]
    modules += [entry("stage.b", "Unit"), entry("stage.b.x", "Linear")]
    modules += [entry("up", "Up"), entry("up.x", "Linear"), entry("down", "Down")]
    modules += [entry("down.x", "Linear")]
    assert repeated_blocks(modules) == ["stage.a", "stage.b"]
    runs_of_two = [entry("p", "P"), entry("p.a", "Linear"), entry("q", "P"), entry("q.a", "Linear")]
    assert repeated_blocks(runs_of_two) == ["p", "q"]
    assert repeated_blocks([]) == []


def test_a_run_is_consecutive_siblings():
    modules = [entry("a", "Linear"), entry("b", "ReLU"), entry("c", "Linear")]
    assert len(repeated_blocks(modules)) == 1


def test_description_names_the_count_class_and_span():
    modules = vit(3)
    paths = repeated_blocks(modules)
    assert blocks_description(paths, modules) == "the 3 Block modules blocks.0 ... blocks.2"
    assert blocks_description(["head"], modules) == "the 1 Linear module head"


def test_one_layer_warns_in_one_line():
    with pytest.warns(UserWarning, match=r"only one layer is selected \(head\)") as caught:
        warn_if_one_layer(["head"])
    assert "\n" not in str(caught[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_one_layer(["a", "b"])


def test_no_match_names_the_closest_paths_and_counts_the_rest():
    paths = [module.path for module in vit(12)]
    message = no_match_message("block.3.atn", paths)
    assert message.startswith("layers='block.3.atn' matches no module; the closest module paths:")
    assert "blocks.3.attn" in message and "\n" not in message
    assert message.endswith(f"(and {len(paths) - 5:,} more)")
    assert len(message) < 250


def test_no_match_without_close_paths_shows_the_first():
    message = no_match_message("zzzz", ["a", "b"])
    assert message == "layers='zzzz' matches no module; its first modules: a, b"
    assert no_match_message("x", [""]).endswith("the model has no modules")

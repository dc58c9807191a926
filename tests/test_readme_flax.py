"""The README's Flax example (the ```python block of its "Flax models" section) runs as
written: a model with one nnx.Conv gets its repeated blocks, said in one warning line."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_flax_example_selects_the_repeated_blocks():
    section = README.read_text().split("### Flax models\n", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(block.strip().splitlines()) < 10
    session: dict = {}
    with pytest.warns(UserWarning, match="the 3 Linear modules blocks.layers.0 ... blocks.layers"):
        exec(compile(block, str(README), "exec"), session)
    assert session["names"] == ["blocks.layers.0", "blocks.layers.1", "blocks.layers.2"]
    assert session["grams"].shape == (3, 60, 60)

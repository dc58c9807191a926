"""The README's Python examples run as written."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.slow
def test_readme_python_blocks_run(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 3
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    assert namespace["batch"].coef.shape == (2, 300, 300)
    assert namespace["sim"].shape == (2, 2)
    assert namespace["grams"].shape[1:] == (300, 300)
    assert (tmp_path / "runs" / "digits" / "checkpoints").is_dir()

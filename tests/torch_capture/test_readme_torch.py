"""The README's PyTorch example (its ```py block) runs as written and writes a report."""

import json
import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_torch_example_runs(tmp_path, monkeypatch):
    (block,) = re.findall(r"```py\n(.*?)```", README.read_text(), flags=re.S)
    assert len(block.strip().splitlines()) <= 10
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(block, str(README), "exec"), namespace)
    out = tmp_path / "ssc_out" / "my_torch_net"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["layers"] == namespace["g"].names == ["0", "2"]
    assert (out / "report.html").exists()
    np.testing.assert_allclose(
        metrics["ssc_cka"], namespace["result"].similarity["ssc_cka"], atol=1e-6
    )
    assert set(namespace["result"].table1) == {
        "ssc_label_accuracy",
        "network_accuracy",
        "agreement",
    }

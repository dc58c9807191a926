"""The README's PyTorch examples (its ```py blocks: a torchvision CNN, a timm ViT, a Hugging
Face text model; one session) run as written and write their reports."""

import json
import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch.nn")
pytest.importorskip("torchvision")
pytest.importorskip("timm")
pytest.importorskip("transformers")

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_torch_examples_run(tmp_path, monkeypatch):
    blocks = re.findall(r"```py\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) == 3 and all(len(b.strip().splitlines()) < 10 for b in blocks)
    monkeypatch.chdir(tmp_path)
    session: dict = {}
    exec(compile(blocks[0], str(README), "exec"), session)
    cnn = json.loads((tmp_path / "ssc_out" / "my_cnn" / "metrics.json").read_text())
    assert cnn["layers"] == ["layer1", "layer2", "layer3", "layer4"]
    np.testing.assert_allclose(cnn["ssc_cka"], session["result"].similarity["ssc_cka"], atol=1e-6)
    assert len(list((tmp_path / "ssc_out" / "my_cnn" / "figures").glob("wrong_input_*"))) > 0
    for block in blocks[1:]:
        exec(compile(block, str(README), "exec"), session)
    cross = session["both"].cross[0]
    assert cross.similarity["linear_cka"].shape == (4, 4)
    assert (tmp_path / "ssc_out" / "cnn_vs_vit" / "report.html").exists()
    saved = session["ssc_jax"].read_activations(tmp_path / "vit.safetensors")
    assert list(saved.names) == [f"blocks.{i}" for i in range(4)] and saved.predictions is not None
    bert = json.loads((tmp_path / "ssc_out" / "my_bert" / "metrics.json").read_text())
    assert bert["layers"] == [f"hidden_states.{i}" for i in range(4)]

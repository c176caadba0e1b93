"""toyloops export: the trained net as ONNX (checked under onnxruntime) or TorchScript, beside its checkpoint."""

from pathlib import Path

import onnxruntime
import pytest
import torch
from conftest import BLOBS_SHORT

from toyloops import Classifier
from toyloops.rules.errors import ConfigError
from toyloops.tools.export import export, run


@pytest.fixture
def checkpoints(trained, tmp_path) -> dict[str, Path]:
    """The session's short MLP run on 3 blobs and a short Transformer run on token sequences, copied
    here (export writes beside the checkpoint)."""
    runs = {"blobs_mlp": trained("lightning", "blobs_mlp", *BLOBS_SHORT),
            "majority_transformer": trained("lightning", "majority_transformer", "--trainer.max_epochs=1",
                                            "--data.n_samples=400")}
    return {name: run.copy_to(tmp_path / name).last for name, run in runs.items()}


def _inputs(name: str) -> torch.Tensor:  # a batch size other than the one exported with
    return torch.randn(7, 2) if name == "blobs_mlp" else torch.randint(1, 50, (7, 16))


def test_the_onnx_model_gives_torchs_logits_under_onnxruntime(checkpoints):
    path = run(["--ckpt_path", str(checkpoints["blobs_mlp"])])
    assert path == checkpoints["blobs_mlp"].with_suffix(".onnx")
    x = _inputs("blobs_mlp")
    (logits,) = onnxruntime.InferenceSession(path).run(None, {"x": x.numpy()})
    with torch.no_grad():
        expected = Classifier.load_from_checkpoint(checkpoints["blobs_mlp"]).eval()(x)
    assert logits.shape == (7, 3) and torch.allclose(torch.from_numpy(logits), expected, atol=1e-5)


@pytest.mark.parametrize("name", ["blobs_mlp", "majority_transformer"])
def test_the_torchscript_model_gives_torchs_logits(checkpoints, name):
    path = export(checkpoints[name], "torchscript", output=str(checkpoints[name].with_name(f"{name}.pt")))
    x = _inputs(name)
    with torch.no_grad():
        expected = Classifier.load_from_checkpoint(checkpoints[name]).eval()(x)
        assert torch.allclose(torch.jit.load(path)(x), expected, atol=1e-6)


def test_a_net_onnx_cannot_take_is_one_line_naming_the_way_that_works(checkpoints):
    with pytest.raises(ConfigError, match=r"TransformerClassifier does not export to ONNX .*--format torchscript does"):
        export(checkpoints["majority_transformer"], "onnx")


def test_export_never_overwrites_a_file(checkpoints, tmp_path):
    mine = tmp_path / "model.onnx"
    mine.write_text("mine")
    with pytest.raises(ConfigError, match="exists: toyloops does not overwrite it"):
        export(checkpoints["blobs_mlp"], "onnx", output=str(mine))
    assert mine.read_text() == "mine"

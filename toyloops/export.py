"""toyloops export --ckpt_path logs/blobs_mlp/version_0/checkpoints/last.ckpt [--format onnx|torchscript]

A trained classifier's net as one file beside its checkpoint (``last.onnx`` or ``last.pt``), mapping
a batch of inputs, of any size, to the logits ``model(x)`` gives: ONNX for onnxruntime and other
runtimes (``pip install 'toyloops[export]'``), or TorchScript for ``torch.jit.load``.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Literal

import torch
from jsonargparse import ArgumentParser
from torch import Tensor, nn

from toyloops import runs
from toyloops.checkpoints import write_atomic
from toyloops.errors import ConfigError
from toyloops.module import Classifier


def example_input(net: nn.Module) -> Tensor:
    """Two inputs of the shape the net takes: points (B, in_features) or tokens (B, seq_len)."""
    init_args = getattr(net, "init_args", {})
    if "seq_len" in init_args:
        return torch.ones(2, init_args["seq_len"], dtype=torch.long)
    return torch.zeros(2, init_args.get("in_features", 2))


def export(ckpt_path: str | Path, format: Literal["onnx", "torchscript"] = "onnx", output: str | None = None) -> Path:
    """Write the checkpoint's net as ONNX or TorchScript; returns the file's path."""
    net = Classifier.load_from_checkpoint(ckpt_path).net.eval()
    path = Path(output) if output else Path(ckpt_path).with_suffix(".onnx" if format == "onnx" else ".pt")
    if path.exists():
        raise ConfigError(f"{path} exists: toyloops does not overwrite it (remove it, or give --output)")
    x = example_input(net)
    if format == "torchscript":  # check_trace=False: the encoder's graph differs run to run, its outputs do not
        buffer = io.BytesIO()
        torch.jit.save(torch.jit.trace(net, x, check_trace=False), buffer)
        write_atomic(path, buffer.getbuffer())
        return path
    try:
        program = torch.onnx.export(net, (x,), input_names=["x"], output_names=["logits"], dynamo=True,
                                    dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
    except ImportError as err:
        raise ConfigError(f"--format onnx needs {err.name}: pip install 'toyloops[export]'") from None
    except torch.onnx.OnnxExporterError as err:
        raise ConfigError(f"model.net={type(net).__name__} does not export to ONNX with torch {torch.__version__} "
                          f"({str(err).splitlines()[0][:120]}); --format torchscript does") from None
    write_atomic(path, program.model_proto.SerializeToString())
    return path


def run(args: list[str] | None = None) -> Path:
    parser = ArgumentParser(prog="toyloops export", exit_on_error=False, description=__doc__.splitlines()[0])
    parser.add_function_arguments(export)
    cfg = parser.parse_args(list(sys.argv[1:] if args is None else args))
    path = export(cfg.ckpt_path, cfg.format, cfg.output)
    print(f"exported: {path}")
    return path


def main(args: list[str] | None = None) -> None:
    runs.main(run, args)


if __name__ == "__main__":
    main()

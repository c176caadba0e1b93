"""toyloops export --ckpt_path logs/blobs_mlp/version_0/checkpoints/last.ckpt [--format onnx|torchscript]

A trained classifier's net as one file beside its checkpoint (``last.onnx`` or ``last.pt``), mapping
a batch of inputs, of any size, to the logits ``model(x)`` gives: ONNX for onnxruntime and other
runtimes (``pip install 'toyloops[export]'``), or TorchScript for ``torch.jit.load``.
"""

from __future__ import annotations

import io
import logging
import re
import sys
import warnings
from contextlib import redirect_stdout
from pathlib import Path
from typing import Literal

import torch
from jsonargparse import ArgumentParser

from toyloops.engine import runs
from toyloops.engine.checkpoints import check_weights, write_new
from toyloops.rules.errors import ConfigError
from toyloops.rules.specs import build, read_checkpoint

SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt"}
EXISTS = "{} exists: toyloops does not overwrite it (remove it, or give another --output)"


def export(ckpt_path: str | Path, format: Literal["onnx", "torchscript"] = "onnx", output: str | None = None) -> Path:
    """Write the checkpoint's net as ONNX or TorchScript; returns the file's path. The file maps
    the net's inputs to its logits: points standardised as in training (the data module's
    ``preprocess``), or token ids."""
    ckpt_path = runs.newest_last() if str(ckpt_path) == "last" else Path(ckpt_path)
    path = Path(output) if output else ckpt_path.with_suffix(SUFFIXES[format])
    if path.suffix != SUFFIXES[format]:
        raise ConfigError(f"--output {str(path)!r} does not end in {SUFFIXES[format]}, the suffix of "
                          f"--format {format}")
    if path.exists():
        raise ConfigError(EXISTS.format(path))
    checkpoint = read_checkpoint(ckpt_path)
    spec = (checkpoint.get("hyper_parameters") or {}).get("net")
    if not spec:
        raise ConfigError(f"{ckpt_path}: its net is not one of toyloops' own, which a checkpoint stores by reference "
                          "only; export it in Python: Classifier.load_from_checkpoint(path, net=YourNet(...)).net, "
                          "then torch.onnx.export")
    net = build(spec, "net", "model.net")  # the net alone, whichever LightningModule trained it
    state = {key[4:]: value for key, value in checkpoint["state_dict"].items() if key.startswith("net.")}
    check_weights({"state_dict": state}, net, ckpt_path)  # a missing, mis-shaped or non-finite weight: one line
    net.load_state_dict(state)
    net.eval()
    init_args = getattr(net, "init_args", {})  # two inputs: tokens (B, seq_len) or points (B, in_features)
    x = torch.ones(2, init_args["seq_len"], dtype=torch.long) if "seq_len" in init_args else \
        torch.zeros(2, init_args.get("in_features", 2))
    if format == "torchscript":  # check_trace=False: the encoder's graph differs run to run, its outputs do not
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the encoder's fast-path checks
            torch.jit.save(torch.jit.trace(net, x, check_trace=False), buffer)
        return _write(path, buffer.getbuffer())
    # torch.onnx reports its progress on stdout and logs "torchvision is not installed" and the like:
    # only a failure's first line is the user's business
    onnx_log = logging.getLogger("torch.onnx")
    level, onnx_log.level = onnx_log.level, logging.ERROR
    try:
        with redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(net, (x,), input_names=["x"], output_names=["logits"], dynamo=True,
                                        dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
    except ImportError as err:
        raise ConfigError(f"--format onnx needs {err.name}: pip install 'toyloops[export]'") from None
    except torch.onnx.OnnxExporterError as err:
        first = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip().splitlines()[0].split(". ")[0][:120]
        raise ConfigError(f"model.net={type(net).__name__} does not export to ONNX with torch {torch.__version__} "
                          f"({first}); --format torchscript does") from None
    finally:
        onnx_log.level = level
    return _write(path, program.model_proto.SerializeToString())


def _write(path: Path, data: bytes | memoryview) -> Path:
    try:
        write_new(path, data)
    except FileExistsError:  # another export wrote it a moment ago
        raise ConfigError(EXISTS.format(path)) from None
    return path


def run(args: list[str] | None = None) -> Path:
    parser = ArgumentParser(prog="toyloops export", exit_on_error=False, description=__doc__.splitlines()[0])
    parser.add_function_arguments(export)
    cfg = parser.parse_args(list(sys.argv[1:] if args is None else args))
    path = export(cfg.ckpt_path, cfg.format, cfg.output)
    print(f"exported: {path} (it takes what the net takes: token ids, or points standardised as in training, "
          "which the data module's preprocess() gives)")
    return path


def main(args: list[str] | None = None) -> None:
    runs.main(run, args)


if __name__ == "__main__":
    main()

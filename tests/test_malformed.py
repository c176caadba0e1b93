"""A wrong type in any section of a checkpoint is one line naming the section, in every command and
both engines, before anything reads it (issue 21 class 6)."""

import copy

import pytest
import torch
from conftest import BLOBS_SHORT, CONFIGS

from toyloops.engine import cli, loop_cli
from toyloops.rules.errors import ConfigError
from toyloops.rules.specs import read_checkpoint

SECTIONS = [("toyloops", "rng"), ("toyloops", "loop"), ("toyloops", "data"), ("toyloops", "engine"), ("loops",),
            ("callbacks",), ("lr_schedulers",), ("optimizer_states",), ("PointsDataModule",), ("global_step",),
            ("toyloops", "rng", "torch"), ("toyloops", "loop", "epoch"), ("toyloops", "data", "batches_done")]


def corrupt(checkpoint: dict, keys: tuple[str, ...], value: object) -> dict:
    node = checkpoint
    for key in keys[:-1]:
        node = node[key]
    node[keys[-1]] = value
    return checkpoint


@pytest.fixture(scope="module")
def checkpoints(trained):
    return {engine: torch.load(trained(engine, "blobs_mlp", *BLOBS_SHORT).last, weights_only=True)
            for engine in ("lightning", "loop")}


@pytest.mark.parametrize("engine", ["lightning", "loop"])
def test_a_wrong_type_in_a_section_is_one_line_naming_it(checkpoints, tmp_path, engine):
    checkpoint, checked = checkpoints[engine], []
    for keys in SECTIONS:
        if keys[0] not in checkpoint or (len(keys) > 1 and keys[1] not in checkpoint[keys[0]]):
            continue  # a section this engine does not write (Lightning's loops, the hand loop's toyloops.loop)
        path = tmp_path / "bad.ckpt"
        torch.save(corrupt(copy.deepcopy(checkpoint), keys, 3.5), path)  # a float: of no section's type
        with pytest.raises(ConfigError, match=rf"its {'.'.join(keys)}( state)? is a float, expected"):
            read_checkpoint(path)
        checked.append(keys)
    assert len(checked) >= 9, checked  # each engine writes nine or more of them


def test_fit_and_validate_refuse_it_in_one_line_in_both_engines(checkpoints, in_tmp):
    for engine, checkpoint in checkpoints.items():
        path = in_tmp / f"{engine}.ckpt"
        torch.save(corrupt(copy.deepcopy(checkpoint), ("optimizer_states",), {"state": 1}), path)
        config = ["--config", str(CONFIGS / "blobs_mlp.yaml"), *BLOBS_SHORT, "--ckpt_path", str(path)]
        for main in (cli.main, loop_cli.main):
            for stage in ("fit", "validate"):
                with pytest.raises(SystemExit) as stop:
                    main([stage, *config])
                assert "its optimizer_states is a dict, expected list" in stop.value.code
                assert "\n" not in stop.value.code

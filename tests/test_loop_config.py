"""A config of either engine runs in the hand loop (issue 21, class 7): ``toyloops loop`` parses every
``L.Trainer`` key and train.py's callback sections, as LightningCLI does, and refuses in one line, naming it,
a key it does not implement set to anything but its default."""

from pathlib import Path

import pytest
import torch
import yaml
from conftest import BLOBS_SHORT, CONFIGS

from toyloops.engine import cli, loop_cli
from toyloops.rules.errors import ConfigError


def test_a_lightning_runs_config_yaml_trains_in_the_hand_loop_to_the_same_weights(trained, in_tmp):
    run = trained("lightning", "blobs_mlp", *BLOBS_SHORT)
    config = yaml.safe_load((run.run_dir / "config.yaml").read_text())
    assert config["trainer"]["plugins"] and config["trainer"]["logger"]["init_args"]["version"] == 0
    # as train.py writes it with its progress bar on (this run had it off): the hand loop prints its own
    config["trainer"]["callbacks"] = [{"class_path": "toyloops.engine.callbacks.ProgressBar"}]
    (in_tmp / "config.yaml").write_text(yaml.safe_dump(config))
    result = loop_cli.run(["fit", "--config", str(in_tmp / "config.yaml")])
    assert result["last_checkpoint"] == Path("logs/blobs_mlp/loop_version_0/checkpoints/last.ckpt")  # its own run
    ours, theirs = (torch.load(path, weights_only=True) for path in (result["last_checkpoint"], run.last))
    assert ours["global_step"] == theirs["global_step"] > 0
    assert all(torch.equal(ours["state_dict"][k], theirs["state_dict"][k]) for k in theirs["state_dict"])


def test_loop_validate_scores_a_lightning_checkpoint_from_it_alone_as_lightning_does(trained, in_tmp):
    run = trained("lightning", "blobs_mlp", *BLOBS_SHORT).copy_to(in_tmp)
    cli.main(["validate", "--ckpt_path", str(run.last)])
    hand = loop_cli.run(["validate", "--ckpt_path", str(run.last)])  # the run's (Lightning) config.yaml
    lightning, loop = (yaml.safe_load(path.read_text())["metrics"]
                       for path in sorted((run.run_dir / "eval").glob("validate_*/metrics.yaml")))
    assert loop == lightning == {key: hand[key] for key in lightning} and lightning["val/acc"] > 0.9


@pytest.mark.parametrize(("override", "message"), [
    ({"checkpoint": {"save_top_k": 3}}, r"checkpoint.save_top_k=3: the hand loop does not implement it \(it takes "
                                        r"checkpoint.monitor, checkpoint.mode\); use train.py"),
    ({"lr_monitor": {"logging_interval": "step"}}, "lr_monitor.logging_interval='step': the hand loop does not"),
    ({"trainer": {"accumulate_grad_batches": 2}}, r"trainer.accumulate_grad_batches=2: the hand trainer does not "
                                                  r"implement it; use L.Trainer  \(hand-loop trainer keys: max_epochs"),
    ({"trainer": {"plugins": [{"class_path": "lightning.pytorch.plugins.io.TorchCheckpointIO"}]}},
     "trainer.plugins=.*TorchCheckpointIO.*: the hand trainer does not implement it"),
    ({"weights_only": True}, "weights_only=True: the hand loop does not implement it; use train.py"),
])
def test_a_key_the_hand_loop_does_not_implement_is_refused_in_one_line_naming_it(in_tmp, override, message):
    (in_tmp / "extra.yaml").write_text(yaml.safe_dump(override))
    with pytest.raises(ConfigError, match=message):
        loop_cli.run(["fit", "--config", str(CONFIGS / "blobs_mlp.yaml"), "--config", str(in_tmp / "extra.yaml")])
    assert not (in_tmp / "logs").exists()

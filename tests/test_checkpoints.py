"""One checkpoint format: either engine evaluates the other's checkpoints, and a library user
reloads any Classifier checkpoint (train.py, hand loop, plain Trainer) as plain data."""

from __future__ import annotations

import errno
import functools
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from conftest import BLOBS_SHORT, CONFIGS, run_cli

from toyloops import MLP, Classifier, PointsDataModule, SequenceDataModule, TransformerClassifier, classification_loss
from toyloops.engine import runs
from toyloops.engine.loop_cli import run
from toyloops.rules.errors import ConfigError
from toyloops.rules.specs import load_checkpoint

CONFIG = str(CONFIGS / "blobs_mlp.yaml")
SHORT = ["--config", CONFIG, *BLOBS_SHORT]


@pytest.fixture
def both_engines(trained):
    """One short blobs_mlp run per engine (shared by the session): (lightning, loop) TrainedRun."""
    return trained("lightning", "blobs_mlp", *BLOBS_SHORT), trained("loop", "blobs_mlp", *BLOBS_SHORT)


def test_each_engine_evaluates_the_others_checkpoint(both_engines, tmp_path, monkeypatch):
    lightning, loop = (each.copy_to(tmp_path) for each in both_engines)  # validate writes eval/ into the run
    monkeypatch.chdir(tmp_path)
    assert run(["validate", *SHORT, "--ckpt_path", str(lightning.last)])["val/acc"] == \
        pytest.approx(lightning.metrics["val/acc"])
    cli = run_cli("validate", *SHORT, "--ckpt_path", str(loop.last))
    assert cli.trainer.callback_metrics["val/acc"].item() == pytest.approx(loop.metrics["val/acc"])


@pytest.mark.parametrize("engine", ["lightning", "loop"])
def test_resuming_in_the_other_engine_is_refused_in_one_line(both_engines, engine, tmp_path, monkeypatch):
    lightning, loop = (each.copy_to(tmp_path) for each in both_engines)
    monkeypatch.chdir(tmp_path)
    other = loop.last if engine == "lightning" else lightning.last
    with pytest.raises(ConfigError, match=f"was written by {'loop' if engine == 'lightning' else 'lightning'}"):
        (run_cli if engine == "lightning" else lambda *a: run(list(a)))("fit", *SHORT, "--ckpt_path", str(other))


@pytest.mark.parametrize("engine", ["lightning", "loop"])
def test_load_from_checkpoint_rebuilds_model_and_data_from_either_engine(both_engines, engine):
    lightning, loop = both_engines
    path = lightning.last if engine == "lightning" else loop.last
    assert isinstance(torch.load(path, weights_only=True), dict)  # plain data
    model = Classifier.load_from_checkpoint(path).eval()
    datamodule = PointsDataModule.load_from_checkpoint(path)
    assert isinstance(model.net, MLP) and model.num_classes == 3
    assert datamodule.hparams["n_samples"] == 600 and len(datamodule.centers) == 3  # the run's data, not defaults
    raw_x, raw_y = datamodule.generate(200, 7)  # new raw points, scaled as the model saw them in training
    with torch.no_grad():
        accuracy = (model(datamodule.preprocess(raw_x)).argmax(1) == raw_y).float().mean().item()
    assert accuracy > 0.9
    assert torch.equal(datamodule.mean, load_checkpoint(path)["PointsDataModule"]["mean"])


def _plain_trainer_checkpoint(tmp_path: Path, model: Classifier) -> Path:
    trainer = L.Trainer(max_epochs=1, default_root_dir=tmp_path, logger=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.fit(model, datamodule=PointsDataModule(n_samples=300))
    path = tmp_path / "plain.ckpt"
    trainer.save_checkpoint(path)
    return path


@pytest.mark.parametrize("optimizer", [None, functools.partial(torch.optim.AdamW, lr=0.02), torch.optim.SGD],
                         ids=["default", "partial", "class"])
def test_a_plain_trainer_checkpoint_reloads_with_weights_only(tmp_path, optimizer):
    model = Classifier(MLP(2, 2), optimizer=optimizer) if optimizer is not torch.optim.SGD \
        else Classifier(MLP(2, 2), optimizer=functools.partial(optimizer, lr=0.1))
    path = _plain_trainer_checkpoint(tmp_path, model)
    hparams = torch.load(path, weights_only=True)["hyper_parameters"]  # refuses any pickled function
    assert hparams["optimizer"]["class_path"] in ("torch.optim.AdamW", "torch.optim.SGD")
    loaded = Classifier.load_from_checkpoint(path)
    assert loaded.hparams == model.hparams
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values(),
                                                 strict=True))
    assert type(loaded.configure_optimizers()) is type(model.configure_optimizers())


def test_a_live_net_without_init_args_needs_net_when_loading(tmp_path):
    net = torch.nn.Sequential(torch.nn.Linear(2, 1), torch.nn.Flatten(0))
    path = _plain_trainer_checkpoint(tmp_path, Classifier(net, num_classes=2))
    assert "net" not in torch.load(path, weights_only=True)["hyper_parameters"]
    with pytest.raises(ConfigError, match="pass net= to load_from_checkpoint"):
        Classifier.load_from_checkpoint(path)
    fresh = torch.nn.Sequential(torch.nn.Linear(2, 1), torch.nn.Flatten(0))
    loaded = Classifier.load_from_checkpoint(path, net=fresh)
    assert torch.equal(loaded.net[0].weight, net[0].weight)


def test_weights_only_false_is_the_callers_choice_and_refusals_are_whole_sentences(tmp_path):
    path = tmp_path / "pickled.ckpt"
    checkpoint = torch.load(_plain_trainer_checkpoint(tmp_path, Classifier(MLP(2, 2))), weights_only=True)
    checkpoint["hyper_parameters"]["optimizer"] = functools.partial(torch.optim.SGD, lr=0.1)  # an old-style hparam
    torch.save(checkpoint, path)
    with pytest.raises(ConfigError) as refused:
        Classifier.load_from_checkpoint(path)
    message = str(refused.value)
    assert "refused, it needs code to load" in message and "functools.partial" in message
    assert message.endswith(")") and "\n" not in message  # whole, one line, not cut mid-word
    loaded = Classifier.load_from_checkpoint(path, weights_only=False)
    assert isinstance(loaded.configure_optimizers(), torch.optim.SGD)


HOSTILE = [  # (hyperparameter, value): each names code that a loader must not import or call
    ("net", {"class_path": "this.Foo", "init_args": {}}),
    ("scheduler", {"class_path": "torch.optim.lr_scheduler.LambdaLR", "init_args": {"lr_lambda": "os._exit"}}),
    ("optimizer", {"class_path": "torch.optim.SGD", "init_args": {"lr": "os.system"}}),
    ("_instantiator", "lightning.pytorch.cli.instantiate_module"),
    ("scheduler", {"class_path": "torch.optim.lr_scheduler.CyclicLR",  # a Callable argument, a name jsonargparse
                   "init_args": {"base_lr": 0.001, "max_lr": 0.01, "scale_fn": "this.x\u00b7"}}),  # would import
    ("net", {"class_path": "toyloops.core.nets.Accuracy", "init_args": {}}),  # an nn.Module there, not a net
]
_LOAD_EACH = """
import sys
from toyloops import Classifier
from toyloops.engine import cli
for path in sys.argv[2:]:
    try:
        Classifier.load_from_checkpoint(path)
    except ValueError as err:
        print(err)
    try:
        cli.main(["validate", "--config", sys.argv[1], "--ckpt_path", path])
    except SystemExit as err:
        print(err)
print("imported this" if "this" in sys.modules else "nothing imported")
"""


def test_hyperparameters_naming_code_are_refused_before_anything_is_imported(tmp_path):
    checkpoint = torch.load(_plain_trainer_checkpoint(tmp_path, Classifier(MLP(2, 2))), weights_only=True)
    paths = []
    for i, (where, value) in enumerate(HOSTILE):
        torch.save({**checkpoint, "hyper_parameters": {**checkpoint["hyper_parameters"], where: value}},
                   tmp_path / f"hostile{i}.ckpt")
        paths.append(str(tmp_path / f"hostile{i}.ckpt"))
    result = subprocess.run([sys.executable, "-c", _LOAD_EACH, CONFIG, *paths], cwd=tmp_path, capture_output=True,
                            text=True)  # a fresh process, so sys.modules tells what was imported
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[-1] == "nothing imported"
    for i, (where, _) in enumerate(HOSTILE):  # refused by the library loader and by train.py alike
        refusals = [line for line in lines if f"hostile{i}.ckpt" in line and f"hyper_parameters.{where}" in line
                    and ("not allowed" in line or "may not name Python code" in line)]
        assert len(refusals) == 2, (where, result.stdout)


def test_num_classes_has_one_source_the_net():
    assert Classifier(MLP(2, 3)).num_classes == 3
    assert Classifier(TransformerClassifier(num_classes=4)).num_classes == 4
    with pytest.raises(ConfigError, match="num_classes=2 but net MLP predicts 3"):
        Classifier(MLP(2, 3), num_classes=2)


def test_two_classes_are_two_logits_for_cross_entropy_and_one_logit_is_a_choice_the_shared_loss_takes():
    logits, y = MLP(2, 2)(torch.randn(8, 2)), torch.randint(0, 2, (8,))
    assert logits.shape == (8, 2) and torch.equal(F.cross_entropy(logits, y), classification_loss(logits, y))
    one = MLP(2, 2, binary_logits=1)(torch.randn(8, 2))
    assert one.shape == (8,) and torch.isfinite(classification_loss(one, y))
    assert "classification_loss" in (MLP.__module__ and sys.modules[MLP.__module__].__doc__)


def _raises(exc: BaseException):
    def entry(args):  # noqa: ANN001, ANN202
        raise exc
    return entry


@pytest.mark.parametrize(("error", "one_line"), [
    (ConfigError("data.batch_size: must be > 0"), True),
    (OSError(errno.ENOSPC, "No space left on device", "logs/x"), True),
    (ValueError("a bug in our code"), False),
    (KeyError("state_dict"), False),
    (OSError(errno.EIO, "Input/output error"), False),
])
def test_only_a_users_mistake_becomes_one_line(error, one_line, monkeypatch):
    monkeypatch.delenv("TOYLOOPS_DEBUG", raising=False)
    if one_line:
        with pytest.raises(SystemExit) as exit_info:
            runs.main(_raises(error), [])
        assert exit_info.value.code.startswith("error: ") and "\n" not in exit_info.value.code
        monkeypatch.setenv("TOYLOOPS_DEBUG", "1")  # the traceback, on request
    with pytest.raises(type(error)):
        runs.main(_raises(error), [])


def test_an_optimizer_a_checkpoint_cannot_store_is_never_silently_replaced(tmp_path):
    model = Classifier(MLP(2, 2), optimizer=lambda params: torch.optim.SGD(params, lr=0.1))
    path = _plain_trainer_checkpoint(tmp_path, model)
    loaded = Classifier.load_from_checkpoint(path)  # predicts as trained ...
    assert torch.equal(loaded.net.layers[0].weight, model.net.layers[0].weight)
    with pytest.raises(ConfigError, match="pass optimizer= and scheduler= to load_from_checkpoint"):
        loaded.configure_optimizers()  # ... but does not train on with some default optimizer
    again = Classifier.load_from_checkpoint(path, optimizer=functools.partial(torch.optim.SGD, lr=0.1))
    assert isinstance(again.configure_optimizers(), torch.optim.SGD)


def test_a_subclass_of_a_toyloops_net_loads_with_net_given(tmp_path):
    class WideMLP(MLP):
        pass

    path = _plain_trainer_checkpoint(tmp_path, Classifier(WideMLP(2, 2)))
    with pytest.raises(ConfigError, match="WideMLP' is not allowed"):
        Classifier.load_from_checkpoint(path)
    assert isinstance(Classifier.load_from_checkpoint(path, net=WideMLP(2, 2)).net, WideMLP)


def test_a_data_module_never_comes_back_as_a_default_one(tmp_path):
    trainer = L.Trainer(max_epochs=1, default_root_dir=tmp_path, logger=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.fit(Classifier(TransformerClassifier(d_model=16, nhead=2, num_layers=1, dim_feedforward=16)),
                datamodule=SequenceDataModule(n_samples=200))
    trainer.save_checkpoint(tmp_path / "tokens.ckpt")
    with pytest.raises(ConfigError, match="holds no PointsDataModule"):
        PointsDataModule.load_from_checkpoint(tmp_path / "tokens.ckpt")
    assert SequenceDataModule.load_from_checkpoint(tmp_path / "tokens.ckpt").hparams["n_samples"] == 200


def test_a_plain_trainer_refuses_a_net_with_too_few_classes(tmp_path):
    trainer = L.Trainer(max_epochs=1, default_root_dir=tmp_path, logger=False, enable_progress_bar=False)
    three_classes = PointsDataModule(centers=[[0, 0], [2, 2], [-2, 2]], n_samples=300)
    with pytest.raises(ConfigError, match="model.num_classes=2 but the data has 3 classes"):
        trainer.fit(Classifier(MLP(2, 2)), datamodule=three_classes)


def test_old_hyperparameter_keys_file_objects_and_hparams_files_are_checked_too(tmp_path):
    checkpoint = torch.load(_plain_trainer_checkpoint(tmp_path, Classifier(MLP(2, 2))), weights_only=True)
    legacy = {**checkpoint, "hparams": {"_instantiator": "lightning.pytorch.cli.instantiate_module",
                                        "net": {"class_path": "this.Nope", "init_args": {}}}}
    del legacy["hyper_parameters"]["net"]
    torch.save(legacy, tmp_path / "legacy.ckpt")  # older Lightning's key, which its loader still merges in
    with pytest.raises(ConfigError, match="hparams._instantiator='lightning.pytorch.cli.instantiate_module'"):
        Classifier.load_from_checkpoint(tmp_path / "legacy.ckpt")
    with open(tmp_path / "legacy.ckpt", "rb") as f, pytest.raises(ConfigError, match="may not name Python code"):
        Classifier.load_from_checkpoint(f)  # a file object is read and checked the same way
    with pytest.raises(ConfigError, match="hparams_file is not supported"):
        Classifier.load_from_checkpoint(tmp_path / "plain.ckpt", hparams_file=tmp_path / "hparams.yaml")
    with open(tmp_path / "plain.ckpt", "rb") as f:
        assert isinstance(Classifier.load_from_checkpoint(f).net, MLP)

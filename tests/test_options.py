"""The seeds' options as config keys: the binary heads, label smoothing, class weights, weight decay
on weights only, first-token pooling, an eval batch size and no test split."""

import pytest
import torch
import torch.nn.functional as F
from conftest import CONFIGS

from toyloops import MLP, Classifier, PointsDataModule, TransformerClassifier, classification_loss
from toyloops.engine.loop_cli import run
from toyloops.rules.errors import ConfigError


@pytest.fixture
def batch():
    torch.manual_seed(0)
    return torch.randn(64), torch.randint(0, 2, (64,))


@pytest.mark.parametrize(("smoothing", "weights"), [(0.0, None), (0.2, None), (0.0, [1.0, 4.0]), (0.1, [2.0, 0.5])])
def test_one_logit_bce_equals_two_logit_cross_entropy_with_the_same_options(batch, smoothing, weights):
    z, y = batch
    two = torch.stack([torch.zeros_like(z), z], dim=1)  # softmax([0, z]) = (1 - sigmoid(z), sigmoid(z))
    one_logit = classification_loss(z, y, smoothing, weights)
    assert torch.allclose(one_logit, classification_loss(two, y, smoothing, weights), atol=1e-6)


def test_label_smoothing_and_class_weights_mean_what_they_say(batch):
    z, y = batch
    p = torch.sigmoid(z)
    smoothed = y * 0.8 + 0.1  # epsilon 0.2: targets 0.1 and 0.9
    assert torch.allclose(classification_loss(z, y, 0.2), -(smoothed * p.log() + (1 - smoothed) * (1 - p).log()).mean())
    w = torch.tensor([1.0, 4.0])[y]
    per_sample = F.binary_cross_entropy_with_logits(z, y.float(), reduction="none")
    assert torch.allclose(classification_loss(z, y, 0.0, [1.0, 4.0]), (w * per_sample).sum() / w.sum())


def test_binary_logits_2_gives_two_logits_that_train_with_cross_entropy():
    net = MLP(num_classes=2, binary_logits=2)
    assert net(torch.randn(5, 2)).shape == (5, 2)
    with pytest.raises(ConfigError, match="binary_logits must be 1 .* or 2 .*, got 3"):
        MLP(binary_logits=3)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"label_smoothing": 1.0}, "model.label_smoothing=1.0: expected a number in"),
    ({"class_weights": [1.0]}, "model.class_weights=[1.0]: expected 2 finite numbers > 0"),
    ({"class_weights": [1.0, -1.0]}, "model.class_weights=[1.0, -1.0]"),
])
def test_bad_loss_options_are_one_line_naming_the_key(kwargs, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Classifier(MLP(), **kwargs)


def test_decay_biases_false_puts_biases_in_a_group_without_weight_decay():
    model = Classifier(MLP(hidden_sizes=[8]), optimizer=lambda params: torch.optim.AdamW(params, weight_decay=0.1),
                       decay_biases=False)
    decayed, free = model.configure_optimizers().param_groups
    assert decayed["weight_decay"] == 0.1 and free["weight_decay"] == 0.0
    assert [p.shape for p in decayed["params"]] == [(8, 2), (2, 8)]  # the weight matrices
    assert [p.shape for p in free["params"]] == [(8,), (2,)]  # the biases
    (group,) = Classifier(MLP(hidden_sizes=[8]), optimizer=torch.optim.AdamW).configure_optimizers().param_groups
    assert len(group["params"]) == 4  # by default all of them decay, as in torch


def test_first_token_pooling_reads_the_first_position_without_a_cls_token():
    torch.manual_seed(0)
    net = TransformerClassifier(vocab_size=10, seq_len=6, max_len=6, pooling="first", d_model=8, nhead=2,
                                num_layers=1, dim_feedforward=16, dropout=0.0).eval()
    tokens = torch.randint(1, 10, (3, 6))
    h = net.encoder(net.tok_emb(tokens) + net.pos_emb(torch.arange(6)))
    assert torch.equal(net(tokens), net.head(h[:, 0]).squeeze(-1))  # seq_len == max_len: no extra position


def test_eval_batch_size_batches_val_and_test_only():
    dm = PointsDataModule(n_samples=1000, batch_size=32, eval_batch_size=128)
    assert [len(x) for x, _ in dm.val_dataloader()] == [128, 72]
    assert len(dm.test_dataloader()) == 2 and len(dm.train_dataloader()) == 19


def test_no_test_split_trains_and_refuses_to_test_in_one_line(in_tmp):
    args = ["--config", str(CONFIGS / "blobs_logistic.yaml"), "--data.test_fraction=0",
            "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
    result = run(["fit", *args, "--trainer.max_epochs=1"])
    assert result["val/acc"] > 0.9
    with pytest.raises(ConfigError, match="data.test_fraction=0: this data has no test split"):
        run(["test", *args, "--ckpt_path", str(result["last_checkpoint"])])


def test_an_independent_val_draw_is_a_fresh_sample_of_the_same_process():
    split, apart = (PointsDataModule(n_samples=1000, val_draw=draw) for draw in ("split", "independent"))
    for name in ("train", "test"):  # the rest of the one draw is untouched
        assert torch.equal(split.splits[name][1], apart.splits[name][1])
    x_split, (x_apart, y_apart) = split.splits["val"][0], apart.splits["val"]
    assert len(x_apart) == len(x_split) == 200
    train = {tuple(row) for row in apart.splits["train"][0].tolist()}
    assert not train & {tuple(row) for row in x_apart.tolist()}  # no val point is a train point
    assert not torch.equal(x_split, x_apart)
    assert abs(y_apart.float().mean().item() - 0.5) < 0.1  # the same two balanced blobs
    again = PointsDataModule(n_samples=1000, val_draw="independent")
    assert torch.equal(again.splits["val"][0], x_apart)  # seeded: the same every time


def test_an_independent_val_draw_with_folds_is_one_line():
    with pytest.raises(ConfigError, match="val_draw='independent' and data.num_folds"):
        PointsDataModule(val_draw="independent", fold=0, num_folds=4)

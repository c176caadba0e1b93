"""The NumPy rung: manual gradients vs finite differences vs autograd, and vs the hand loop."""

from functools import partial

import numpy as np
import pytest
import torch
from torch import nn

from toyloops import MLP, Classifier, HandTrainer, LogisticRegression, PointsDataModule, classification_loss
from toyloops.tools import scratch


def _random_problem(model_cls, num_classes, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(12, 3))
    y = rng.integers(0, num_classes, size=12)
    model = model_cls(3) if model_cls is scratch.LogisticRegression else model_cls(3, 5, num_classes)
    for p in model.params.values():  # move off the init so no ReLU sits exactly at a kink
        p += rng.normal(scale=0.3, size=p.shape)
    return model, x, y


@pytest.mark.parametrize(("model_cls", "num_classes"), [(scratch.LogisticRegression, 2), (scratch.MLP, 4)])
def test_manual_gradients_equal_finite_differences_and_autograd(model_cls, num_classes):
    model, x, y = _random_problem(model_cls, num_classes)
    manual = model.gradients(x, y)
    assert scratch.max_gradient_error(model, x, y) < 1e-8
    # autograd on the same float64 numbers
    tensors = {k: torch.tensor(v, requires_grad=True) for k, v in model.params.items()}
    xt, yt = torch.tensor(x), torch.tensor(y)
    if model_cls is scratch.LogisticRegression:
        logits = (xt @ tensors["W"] + tensors["b"])[:, 0]
    else:
        logits = torch.relu(xt @ tensors["W1"] + tensors["b1"]) @ tensors["W2"] + tensors["b2"]
    loss = classification_loss(logits, yt)
    assert loss.item() == pytest.approx(model.loss(x, y), abs=1e-14)
    loss.backward()
    for name, t in tensors.items():
        np.testing.assert_allclose(manual[name], t.grad.numpy(), atol=1e-14)


def test_numerical_gradient_of_a_known_function():
    w, x, t = np.array([5.0, -0.3, 0.1]), np.array([1.0, 2.0, -1.0]), 0.7  # the seed 003 example
    grad = scratch.numerical_gradient(lambda: 0.5 * (w @ x - t) ** 2, w)
    np.testing.assert_allclose(grad, (w @ x - t) * x, atol=1e-8)


def _torch_to_numpy(net: nn.Module, model) -> None:
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    names = [("W", "b")] if len(linears) == 1 else [("W1", "b1"), ("W2", "b2")]
    for linear, (w, b) in zip(linears, names, strict=True):
        model.params[w] = linear.weight.detach().numpy().T.copy()
        model.params[b] = linear.bias.detach().numpy().copy()


class Float64Points(PointsDataModule):
    """The same points, served in float64 (``transform`` is the data module's hook for its inputs)."""

    def transform(self, *splits):  # noqa: ANN002, ANN201
        return tuple(x.double() for x in super().transform(*splits))


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
@pytest.mark.parametrize("kind", ["logistic", "mlp"])
def test_numpy_matches_the_hand_loop_after_one_epoch_in_float64(kind, weight_decay, tmp_path):
    centers = [[-1.5, -1.0], [1.2, 1.3]] if kind == "logistic" else [[-1.5, -1.0], [1.2, 1.3], [1.5, -2.0]]
    dm = Float64Points("blobs", n_samples=600, centers=centers, batch_size=32, seed=3)
    torch.manual_seed(0)
    if kind == "logistic":
        net, model = LogisticRegression(2, 2, binary_logits=1).double(), scratch.LogisticRegression(2)
    else:
        net, model = MLP(2, 3, hidden_sizes=[16]).double(), scratch.MLP(2, 16, 3)
    _torch_to_numpy(net, model)
    initial = {k: v.copy() for k, v in model.params.items()}
    # the hand loop's own first-epoch batches, replayed for NumPy
    x_train, y_train = dm.splits["train"]
    order = dm.train_dataloader().indices(0).split(32)
    batches = [(x_train[i].numpy(), y_train[i].numpy()) for i in order]

    optimizer = partial(torch.optim.SGD, lr=0.1, weight_decay=weight_decay)
    trainer = HandTrainer(max_epochs=1, enable_progress_bar=False, logger=False, default_root_dir=tmp_path)
    trainer.fit(Classifier(net, optimizer), datamodule=dm)
    scratch.train_epoch(model, batches, lr=0.1, weight_decay=weight_decay)

    expected = {}
    _torch_to_numpy(net, type("P", (), {"params": expected})())
    for name, value in model.params.items():
        np.testing.assert_allclose(value, expected[name], rtol=0, atol=1e-10)
        assert np.abs(value - initial[name]).max() > 1e-3  # and both really trained


def test_numpy_linear_regression_converges_to_the_closed_form_least_squares_solution():
    rng = np.random.default_rng(0)
    true_w, true_b = np.array([[2.0], [-3.0]]), 0.5
    x = rng.normal(size=(400, 2))
    y = (x @ true_w)[:, 0] + true_b + rng.normal(scale=0.1, size=400)
    model = scratch.LinearRegression(2)
    assert scratch.max_gradient_error(model, x[:16], y[:16]) < 1e-8
    for _ in range(200):
        scratch.train_epoch(model, scratch.minibatches(x, y, 400, rng), lr=0.1)  # full batch: plain GD
    w, b = scratch.least_squares(x, y)
    np.testing.assert_allclose(model.params["W"], w, atol=1e-10)
    assert model.params["b"][0] == pytest.approx(b, abs=1e-10)
    np.testing.assert_allclose(w, true_w, atol=0.02)  # and least squares finds the generating line
    assert b == pytest.approx(true_b, abs=0.02)

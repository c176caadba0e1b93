"""python -m toyloops.tools.scratch   (trains both NumPy models on blobs and checks their gradients)

The bottom rung: logistic regression and a 2-layer ReLU MLP in NumPy, forward and backward written by hand,
mini-batch SGD and a finite-difference gradient check; it matches the hand loop in float64 (tests/test_scratch.py).
``W`` is (in, out), the transpose of what ``nn.Linear`` keeps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

Params = dict[str, np.ndarray]


def sigmoid(z: np.ndarray) -> np.ndarray:
    """1 / (1 + e^-z), computed without overflow for large |z|."""
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1 / (1 + e), e / (1 + e))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax; subtracting the row max keeps exp() finite."""
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


class LinearRegression:
    """y_hat = x @ W + b, mean squared error loss (the first loop anyone writes; seeds 003 and 004)."""

    def __init__(self, in_features: int = 1, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.params: Params = {"W": rng.normal(0.0, 0.01, (in_features, 1)), "b": np.zeros(1)}

    def forward(self, x: np.ndarray) -> np.ndarray:
        return (x @ self.params["W"] + self.params["b"])[:, 0]  # (B,) predictions (logits: LogisticRegression)

    def loss(self, x: np.ndarray, y: np.ndarray) -> float:
        return float(np.mean((self.forward(x) - y) ** 2))

    def gradients(self, x: np.ndarray, y: np.ndarray) -> Params:
        error = 2 * (self.forward(x) - y)  # dL/dy_hat per sample, times B
        return {"W": x.T @ error[:, None] / len(x), "b": np.array([error.mean()])}


class LogisticRegression(LinearRegression):
    """p = sigmoid(x @ W + b), binary cross-entropy loss (seed 000)."""

    def __init__(self, in_features: int = 2, seed: int = 0) -> None:
        super().__init__(in_features, seed)

    def loss(self, x: np.ndarray, y: np.ndarray) -> float:
        z = self.forward(x)
        # -[y log s(z) + (1-y) log(1-s(z))] = max(z, 0) - z*y + log(1 + e^-|z|), stable for any z
        return float(np.mean(np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))))

    def gradients(self, x: np.ndarray, y: np.ndarray) -> Params:
        error = sigmoid(self.forward(x)) - y  # dL/dz per sample, times B
        return {"W": x.T @ error[:, None] / len(x), "b": np.array([error.mean()])}

    def predict(self, x: np.ndarray) -> np.ndarray:
        return (self.forward(x) > 0).astype(np.int64)


def least_squares(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """The closed-form minimiser of the MSE: (W, b) solving [x 1] [W; b] = y in least squares."""
    design = np.hstack([x, np.ones((len(x), 1))])  # (N, F + 1): a column of ones carries b
    solution, *_ = np.linalg.lstsq(design, y, rcond=None)
    return solution[:-1, None], float(solution[-1])


class MLP:
    """logits = relu(x @ W1 + b1) @ W2 + b2, softmax cross-entropy loss (seed 001)."""

    def __init__(self, in_features: int = 2, hidden: int = 16, num_classes: int = 2, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.params: Params = {
            "W1": rng.normal(0.0, np.sqrt(2.0 / in_features), (in_features, hidden)),  # He init for ReLU
            "b1": np.zeros(hidden),
            "W2": rng.normal(0.0, np.sqrt(1.0 / hidden), (hidden, num_classes)),
            "b2": np.zeros(num_classes),
        }

    def _forward(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        z1 = x @ self.params["W1"] + self.params["b1"]  # (B, H)
        h = np.maximum(z1, 0)
        return z1, h, h @ self.params["W2"] + self.params["b2"]  # logits (B, C)

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self._forward(x)[2]

    def loss(self, x: np.ndarray, y: np.ndarray) -> float:
        logits = self.forward(x)
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        return float(-log_probs[np.arange(len(y)), y].mean())

    def gradients(self, x: np.ndarray, y: np.ndarray) -> Params:
        z1, h, logits = self._forward(x)
        dlogits = softmax(logits)
        dlogits[np.arange(len(y)), y] -= 1.0  # softmax + CE: dL/dlogits = (p - onehot) / B
        dlogits /= len(x)
        dh = dlogits @ self.params["W2"].T  # (B, H)
        dz1 = dh * (z1 > 0)  # ReLU passes gradient where it was active
        return {"W1": x.T @ dz1, "b1": dz1.sum(axis=0), "W2": h.T @ dlogits, "b2": dlogits.sum(axis=0)}

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x).argmax(axis=1)


def sgd_step(params: Params, grads: Params, lr: float, weight_decay: float = 0.0) -> None:
    """p <- p - lr * (g + weight_decay * p), in place; L2 on every parameter, as torch.optim.SGD."""
    for name, p in params.items():
        p -= lr * (grads[name] + weight_decay * p)


def train_epoch(model: LogisticRegression | LinearRegression | MLP, batches: Iterable[tuple[np.ndarray, np.ndarray]],
                lr: float, weight_decay: float = 0.0) -> float:
    """One pass of mini-batch SGD; returns the mean of the batch losses (before each step)."""
    losses = []
    for x, y in batches:
        losses.append(model.loss(x, y))
        sgd_step(model.params, model.gradients(x, y), lr, weight_decay)
    return float(np.mean(losses))


def minibatches(x: np.ndarray, y: np.ndarray, batch_size: int, rng: np.random.Generator):
    """Shuffled mini-batches for one epoch (the hand loop's own order comes from BatchIterator)."""
    order = rng.permutation(len(x))
    for start in range(0, len(x), batch_size):
        idx = order[start : start + batch_size]
        yield x[idx], y[idx]


def numerical_gradient(f: Callable[[], float], param: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences (f(p + eps) - f(p - eps)) / 2 eps for every entry of ``param``; ``f`` is re-evaluated
    after each in-place nudge, so it can close over the array."""
    grad = np.zeros_like(param)
    for i in np.ndindex(param.shape):
        original = param[i]
        param[i] = original + eps
        plus = f()
        param[i] = original - eps
        minus = f()
        param[i] = original
        grad[i] = (plus - minus) / (2 * eps)
    return grad


def max_gradient_error(model: LogisticRegression | LinearRegression | MLP, x: np.ndarray, y: np.ndarray) -> float:
    """Largest |manual - finite-difference| over all parameters (near 1e-9 when correct)."""
    manual = model.gradients(x, y)
    return max(np.abs(manual[k] - numerical_gradient(lambda: model.loss(x, y), p)).max()
               for k, p in model.params.items())


def main() -> None:
    from toyloops.core.data import make_blobs, standardize

    x, y = make_blobs(200, seed=0)
    x, y = standardize(x)[0].double().numpy(), y.numpy()
    rng = np.random.default_rng(0)
    for model in (LogisticRegression(2), MLP(2, 16, 2)):
        for epoch in range(1, 21):
            loss = train_epoch(model, minibatches(x, y, 16, rng), lr=0.1)
            if epoch in (1, 5, 10, 20):
                acc = (model.predict(x) == y).mean()
                print(f"{type(model).__name__:<18} epoch {epoch:2d}  loss {loss:.4f}  acc {acc:.3f}")
        print(f"{type(model).__name__:<18} max |manual - finite difference| gradient: "
              f"{max_gradient_error(model, x[:32], y[:32]):.2e}")


if __name__ == "__main__":
    main()

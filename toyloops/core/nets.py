"""The three classifiers as plain ``nn.Module``s, and the loss/prediction rules both engines share.

Every net maps its input to logits (B, C), what ``F.cross_entropy`` takes, two classes included.
``binary_logits=1`` chooses one logit for two classes instead, shape (B,), scored by sigmoid + BCE
(:func:`classification_loss` scores either layout; :func:`probabilities` turns either into (B, C)).
Each net records its constructor arguments in ``init_args``, so a checkpoint can rebuild it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from toyloops.rules.errors import ConfigError, check_positive, checked
from toyloops.rules.specs import allow_net

__all__ = ["MLP", "LinearRegression", "LogisticRegression", "TransformerClassifier", "classification_loss",
           "probabilities"]

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU}


def output_size(num_classes: int, binary_logits: int = 2) -> int:
    """Number of logits a net emits for ``num_classes`` classes: ``binary_logits`` (1 or 2) for
    binary, else one each."""
    if num_classes < 2:
        raise ConfigError(f"num_classes must be >= 2, got {num_classes}")
    if binary_logits not in (1, 2):
        raise ConfigError(f"binary_logits must be 1 (one logit, BCE) or 2 (two logits, cross-entropy), "
                          f"got {binary_logits}")
    return binary_logits if num_classes == 2 else num_classes


def _squeeze_binary(logits: Tensor) -> Tensor:
    return logits.squeeze(-1) if logits.shape[-1] == 1 else logits


@allow_net
class LogisticRegression(nn.Module):
    """Linear classifier: softmax regression (logistic regression with ``binary_logits=1``).

    Args:
        in_features: features per sample (linked from the data module).
        num_classes: classes to tell apart (one logit each; see ``binary_logits``).
        binary_logits: for 2 classes, 2 logits (cross-entropy) or 1 (sigmoid + BCE).
    """

    def __init__(self, in_features: int = 2, num_classes: int = 2, binary_logits: int = 2) -> None:
        super().__init__()
        self.init_args = checked(LogisticRegression, in_features=in_features, num_classes=num_classes,
                                 binary_logits=binary_logits)
        self.num_classes = num_classes
        check_positive("in_features", in_features)
        self.linear = nn.Linear(in_features, output_size(num_classes, binary_logits))

    def forward(self, x: Tensor) -> Tensor:
        return _squeeze_binary(self.linear(x))  # (B, F) -> (B,) or (B, C)


@allow_net
class LinearRegression(nn.Module):
    """y_hat = x @ w + b: one output per sample, (B,), trained by :class:`~toyloops.core.regressor.Regressor`.

    Args:
        in_features: features per sample (linked from the data module).
        bias: learn the intercept b (as ``nn.Linear``'s ``bias``).
    """

    def __init__(self, in_features: int = 1, bias: bool = True) -> None:
        super().__init__()
        self.init_args = checked(LinearRegression, in_features=in_features, bias=bias)
        check_positive("in_features", in_features)
        self.linear = nn.Linear(in_features, 1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x).squeeze(-1)  # (B, F) -> (B,)


@allow_net
class MLP(nn.Module):
    """Multi-layer perceptron: [Linear -> activation -> Dropout] per hidden size, then Linear.

    Args:
        in_features: features per sample (linked from the data module).
        num_classes: classes to tell apart (one logit each; see ``binary_logits``).
        hidden_sizes: width of each hidden layer, input side first.
        activation: one of relu, gelu, tanh, silu.
        dropout: drop probability after each hidden layer, in [0, 1).
        binary_logits: for 2 classes, 2 logits (cross-entropy) or 1 (sigmoid + BCE).
    """

    def __init__(self, in_features: int = 2, num_classes: int = 2, hidden_sizes: Sequence[int] = (16,),
                 activation: str = "relu", dropout: float = 0.0, binary_logits: int = 2) -> None:
        super().__init__()
        self.init_args = checked(MLP, in_features=in_features, num_classes=num_classes, hidden_sizes=hidden_sizes,
                                 activation=activation, dropout=dropout, binary_logits=binary_logits)
        self.init_args["hidden_sizes"] = list(hidden_sizes)  # stored as plain data
        self.num_classes = num_classes
        check_positive("in_features", in_features)
        if not all(size > 0 for size in hidden_sizes):
            raise ConfigError(f"hidden_sizes must all be > 0, got {list(hidden_sizes)}")
        if activation not in ACTIVATIONS:
            raise ConfigError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
        _check_dropout(dropout)
        layers: list[nn.Module] = []
        width = in_features
        for size in hidden_sizes:
            layers += [nn.Linear(width, size), ACTIVATIONS[activation](), nn.Dropout(dropout)]
            width = size
        layers.append(nn.Linear(width, output_size(num_classes, binary_logits)))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return _squeeze_binary(self.layers(x))


@allow_net
class TransformerClassifier(nn.Module):
    """Transformer encoder over token sequences, pooled by a CLS token, the first token or the mean, then Linear.

    Args:
        vocab_size: token ids are in [0, vocab_size) (linked from the data module).
        seq_len: tokens per sequence (linked from the data module).
        num_classes: classes to tell apart (one logit each; see ``binary_logits``).
        d_model, nhead, num_layers, dim_feedforward, dropout: as in ``nn.TransformerEncoderLayer``.
        pooling: ``cls`` reads a prepended CLS token, ``first`` the first token's own output (no extra
            token), ``mean`` averages all positions.
        max_len: positions the learned position embedding covers.
        binary_logits: for 2 classes, 2 logits (cross-entropy) or 1 (sigmoid + BCE).
    """

    def __init__(self, vocab_size: int = 50, seq_len: int = 16, num_classes: int = 2, d_model: int = 64,
                 nhead: int = 4, num_layers: int = 2, dim_feedforward: int = 128, dropout: float = 0.1,
                 pooling: str = "cls", max_len: int = 256, binary_logits: int = 2) -> None:
        super().__init__()
        self.init_args = checked(TransformerClassifier, vocab_size=vocab_size, seq_len=seq_len, num_classes=num_classes,
                                 d_model=d_model, nhead=nhead, num_layers=num_layers, dim_feedforward=dim_feedforward,
                                 dropout=dropout, pooling=pooling, max_len=max_len, binary_logits=binary_logits)
        self.num_classes = num_classes
        for name, value in (("vocab_size", vocab_size), ("seq_len", seq_len), ("d_model", d_model),
                            ("nhead", nhead), ("num_layers", num_layers),
                            ("dim_feedforward", dim_feedforward), ("max_len", max_len)):
            check_positive(name, value)
        if d_model % nhead:
            raise ConfigError(f"nhead={nhead} must divide d_model={d_model}")
        if pooling not in ("cls", "first", "mean"):
            raise ConfigError(f"pooling must be 'cls', 'first' or 'mean', got {pooling!r}")
        if seq_len + (pooling == "cls") > max_len:
            cls_note = " + 1 CLS token" if pooling == "cls" else ""
            raise ConfigError(f"seq_len={seq_len}{cls_note} exceeds max_len={max_len}: raise max_len or shorten it")
        _check_dropout(dropout)
        self.pooling, self.seq_len = pooling, seq_len
        self.tok_emb = nn.Embedding(vocab_size + 1, d_model)  # the extra id is the CLS token
        self.pos_emb = nn.Embedding(max_len, d_model)
        layer = nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, output_size(num_classes, binary_logits))
        self.cls_id = vocab_size

    def forward(self, tokens: Tensor) -> Tensor:
        if self.pooling == "cls":  # (B, L) -> (B, 1 + L), CLS first
            cls = tokens.new_full((tokens.shape[0], 1), self.cls_id)
            tokens = torch.cat([cls, tokens], dim=1)
        pos = torch.arange(tokens.shape[1], device=tokens.device)
        h = self.encoder(self.tok_emb(tokens) + self.pos_emb(pos))  # (B, L', d_model)
        pooled = h.mean(dim=1) if self.pooling == "mean" else h[:, 0]  # cls, first: position 0
        return _squeeze_binary(self.head(pooled))


def classification_loss(logits: Tensor, target: Tensor, label_smoothing: float = 0.0,
                        class_weights: Sequence[float] | None = None) -> Tensor:
    """The loss for either logit layout: BCE-with-logits for (B,), cross-entropy for (B, C).

    ``label_smoothing`` and ``class_weights`` mean what they mean to ``F.cross_entropy`` in both
    layouts: one logit z is scored as the two logits (0, z) would be (so smoothing ε alone turns
    BCE's target into y(1 - ε) + ε/2, and weights alone make it the weighted mean over samples).
    """
    if logits.ndim > 1:
        weight = None if class_weights is None else torch.tensor(class_weights, device=logits.device)
        return F.cross_entropy(logits, target, weight=weight, label_smoothing=label_smoothing)
    if not label_smoothing and class_weights is None:
        return F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype))
    w = torch.tensor(class_weights or (1.0, 1.0), device=logits.device)
    nll_0, nll_1 = F.softplus(logits), F.softplus(-logits)  # -log p(class 0), -log p(class 1)
    nll = torch.where(target == 1, nll_1, nll_0)
    per_sample = (1 - label_smoothing) * w[target] * nll + label_smoothing / 2 * (w[0] * nll_0 + w[1] * nll_1)
    return per_sample.sum() / w[target].sum()


def probabilities(logits: Tensor) -> Tensor:
    """Class probabilities (B, C) from either logit layout (for binary C = 2)."""
    logits = logits.float()
    if logits.ndim == 1:
        p1 = torch.sigmoid(logits)
        return torch.stack([1 - p1, p1], dim=-1)
    return logits.softmax(dim=-1)


def _check_dropout(dropout: float) -> None:
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"dropout must be in [0, 1), got {dropout}")

"""The ensemble's arithmetic: N nets of one architecture as stacked tensors (a leading member dim),
each member's own loss, its own gradient clip and its own optimizer update.

Every function here computes, member by member, what the solo run computes for one net: the same
formulas as ``nn.Linear``, ``F.dropout``, :func:`~toyloops.core.nets.classification_loss`,
``clip_grad_norm_`` and ``torch.optim``'s single-tensor SGD/Adam/AdamW, with the per-member values
(learning rate, weight decay, dropout rate, label smoothing, class weights) as tensors.
tests/test_ensemble.py holds each member to its solo run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from toyloops.core.nets import MLP, LinearRegression, LogisticRegression

STACKABLE = (MLP, LogisticRegression, LinearRegression)  # nets built from Linear, activation and Dropout only
OPTIMIZERS = ("SGD", "Adam", "AdamW")  # torch.optim classes whose update is written out below


def why_not_stackable(nets: Sequence[nn.Module]) -> str | None:
    """None if the nets stack (one architecture, shipped layers), else why not, in a few words."""
    first = nets[0]
    if type(first) not in STACKABLE:
        return f"{type(first).__name__} does not stack (the ensemble stacks {', '.join(c.__name__ for c in STACKABLE)})"
    shapes = [(name, p.shape) for name, p in first.named_parameters()]
    for net in nets[1:]:
        if type(net) is not type(first) or [(name, p.shape) for name, p in net.named_parameters()] != shapes:
            return "the members' nets differ in architecture"
        if any(type(a) is not type(b) for a, b in zip(first.modules(), net.modules(), strict=False)):
            return "the members' nets differ in activation"
    return None


class StackedNet(nn.Module):
    """N copies of one net as one parameter ``flat`` (M, all weights), each weight a view (M, *shape) of
    it: Linear layers by ``torch.baddbmm``, the activation as the net's own module, Dropout with a rate
    and a random stream per member. One flat tensor makes the clip and the update a few ops a step."""

    def __init__(self, nets: Sequence[nn.Module], generators: Sequence[torch.Generator]) -> None:
        super().__init__()
        first = dict(nets[0].named_parameters())
        self.names = list(first)
        self.shapes = [first[name].shape for name in self.names]
        self.sizes = [first[name].numel() for name in self.names]
        self.flat = nn.Parameter(torch.cat([torch.stack([dict(net.named_parameters())[name].detach().flatten()
                                                         for net in nets]) for name in self.names], dim=1))
        self.plan: list[tuple[str, Any]] = []  # ("linear", (weight index, bias index or None)) / ("apply", module)
        index = {name: i for i, name in enumerate(self.names)}
        rates: list[list[float]] = []
        for prefix, module in nets[0].named_modules():
            if isinstance(module, nn.Linear):
                self.plan.append(("linear", (index[f"{prefix}.weight"], index.get(f"{prefix}.bias"))))
            elif isinstance(module, nn.Dropout):
                self.plan.append(("dropout", len(rates)))
                rates.append([dict(net.named_modules())[prefix].p for net in nets])
            elif not list(module.children()):
                self.plan.append(("apply", module))
        self.rates = [torch.tensor(r, dtype=torch.float64) for r in rates]  # (M,) per Dropout layer
        self.dropping = [bool((r > 0).any()) for r in self.rates]
        self.generators = list(generators)
        self.squeeze = nets[0](torch.zeros(1, self.shapes[0][-1])).ndim == 1  # one logit / one output

    def weights(self) -> list[Tensor]:
        """Each weight as a view (M, *shape) of ``flat``."""
        return [part.view(-1, *shape) for part, shape in zip(self.flat.split(self.sizes, dim=1), self.shapes,
                                                                strict=True)]

    def forward(self, x: Tensor) -> Tensor:
        """(M, B, F) -> (M, B, C), or (M, B) where the solo net returns (B,)."""
        h, weights = x, self.weights()
        for kind, what in self.plan:
            if kind == "linear":
                weight, bias = (weights[i] if i is not None else None for i in what)
                h = torch.bmm(h, weight.transpose(1, 2)) if bias is None else \
                    torch.baddbmm(bias.unsqueeze(1), h, weight.transpose(1, 2))  # h @ W^T + b, per member
            elif kind == "dropout":
                h = self.dropout(h, what)
            else:
                h = what(h)
        return h.squeeze(-1) if self.squeeze else h

    def dropout(self, h: Tensor, layer: int) -> Tensor:
        """F.dropout's mask, member by member: bernoulli(1 - p) drawn from the member's stream in the shape
        the solo net draws it (so each member's masks are its solo run's), then divided by (1 - p)."""
        if not self.training or not self.dropping[layer]:
            return h
        rates, noise = self.rates[layer], torch.ones_like(h)
        for m, p in enumerate(rates.tolist()):
            if p > 0.0:  # as at::native::dropout: an empty tensor's bernoulli_(1 - p) (a leading slice: contiguous)
                noise[m].bernoulli_(1 - p, generator=self.generators[m])
        return h * noise.div_((1 - rates).to(h.dtype).view(-1, 1, 1))

    def member_state(self, m: int) -> dict[str, Tensor]:
        """Member ``m``'s weights under the solo net's parameter names."""
        return {name: weight[m] for name, weight in zip(self.names, self.weights(), strict=True)}

    def keep(self, members: Tensor) -> None:
        """Only these members stay (the rest ended): every stacked tensor indexed by them."""
        self.flat = nn.Parameter(self.flat.detach()[members])
        self.rates = [r[members] for r in self.rates]
        self.dropping = [bool((r > 0).any()) for r in self.rates]
        self.generators = [self.generators[m] for m in members.tolist()]


def member_losses(output: Tensor, y: Tensor, task: str, smoothing: Tensor, weights: Tensor | None) -> Tensor:
    """Each member's mean loss over its batch, (M,): what the solo module's loss computes per member
    (classification: :func:`~toyloops.core.nets.classification_loss`; regression: MSE)."""
    if task == "regression":
        return F.mse_loss(output, y.to(output.dtype), reduction="none").mean(-1)
    if output.ndim == 3 and weights is None and not bool(smoothing.any()):
        return F.cross_entropy(output.transpose(1, 2), y, reduction="none").mean(-1)  # (M, C, B) as (N, C, d)
    if output.ndim == 2 and weights is None and not bool(smoothing.any()):
        return F.binary_cross_entropy_with_logits(output, y.to(output.dtype), reduction="none").mean(-1)
    eps = smoothing.to(output.dtype).unsqueeze(1)  # (M, 1)
    if output.ndim == 3:  # F.cross_entropy with weight and label_smoothing, reduction mean
        num_classes = output.shape[-1]
        w = weights.to(output.dtype) if weights is not None else torch.ones(output.shape[0], num_classes,
                                                                               dtype=output.dtype)
        logp = output.log_softmax(-1)
        w_y = w.gather(1, y)  # (M, B)
        nll = -logp.gather(-1, y.unsqueeze(-1)).squeeze(-1)
        smooth = -(logp * w.unsqueeze(1)).sum(-1)
        total = w_y.sum(-1)
        return ((1 - eps.squeeze(1)) * (w_y * nll).sum(-1) / total + eps.squeeze(1) / num_classes * smooth.sum(-1)
                / total)
    w = torch.ones(output.shape[0], 2, dtype=output.dtype) if weights is None else weights.to(output.dtype)
    nll_0, nll_1 = F.softplus(output), F.softplus(-output)  # one logit z scored as the two logits (0, z)
    nll = torch.where(y == 1, nll_1, nll_0)
    w_y = w.gather(1, y)
    per_sample = (1 - eps) * w_y * nll + eps / 2 * (w[:, :1] * nll_0 + w[:, 1:] * nll_1)
    return per_sample.sum(-1) / w_y.sum(-1)


def clip_gradients(grad: Tensor, value: float, algorithm: str) -> None:
    """``clip_grad_norm_`` / ``clip_grad_value_`` per member, on the flat gradient (M, all weights): each
    member's norm over all its gradients (the norm of all, where torch takes the norm of each tensor's)."""
    if algorithm == "value":
        grad.clamp_(-value, value)
        return
    total = torch.linalg.vector_norm(grad, dim=1, keepdim=True)
    grad.mul_(torch.clamp(value / (total + 1e-6), max=1.0))


class StackedOptimizer:
    """One update of every member's weights, on the flat parameter: ``torch.optim``'s single-tensor SGD,
    Adam or AdamW with each member's learning rate, weight decay (and SGD momentum) read, per weight,
    from its own optimizer's parameter groups (members may group their weights apart: ``decay_biases``)."""

    def __init__(self, flat: Tensor, sizes: Sequence[int], optimizers: Sequence[torch.optim.Optimizer],
                 names: Sequence[str], member_params: Sequence[dict[str, Tensor]]) -> None:
        self.flat, self.optimizers = flat, list(optimizers)
        self.kind = type(optimizers[0]).__name__
        self.columns = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))  # weight of each column
        self.groups = []  # per member: the group holding each weight
        for opt, own in zip(optimizers, member_params, strict=True):
            group_of = {id(p): g for g, group in enumerate(opt.param_groups) for p in group["params"]}
            self.groups.append([group_of[id(own[name])] for name in names])
        self.settings = self.shared_settings()
        self.state: dict[str, Tensor] = {}
        self.step_count = 0
        self.read_rates()

    def shared_settings(self) -> dict[str, Any]:
        keys = {"SGD": ("dampening", "nesterov"), "Adam": ("betas", "eps"), "AdamW": ("betas", "eps")}[self.kind]
        settings = {k: self.optimizers[0].param_groups[0][k] for k in keys}
        for opt in self.optimizers:
            for group in opt.param_groups:
                if any(group.get(flag) for flag in ("amsgrad", "maximize", "differentiable")):
                    raise ValueError(f"{self.kind} with amsgrad/maximize is not written out")
                if any(group[k] != v for k, v in settings.items()):
                    raise ValueError(f"the members' {self.kind} differ in {', '.join(settings)}")
        return settings

    def per_column(self, key: str) -> Tensor:
        """(M, all weights): each member's group value of ``key`` for each column, in float64."""
        per_weight = torch.tensor([[opt.param_groups[g][key] for g in groups] for opt, groups in zip(
            self.optimizers, self.groups, strict=True)], dtype=torch.float64)
        return per_weight[:, self.columns]

    def read_rates(self) -> None:
        """Learning rate, weight decay and momentum: after a scheduler step, read again."""
        self.lr, self.wd = self.per_column("lr"), self.per_column("weight_decay")
        dtype = self.flat.dtype
        if self.kind == "SGD":
            self.momentum = self.per_column("momentum")
            self.uses_momentum = bool((self.momentum > 0).any())
            self.kept = torch.where(self.momentum > 0, 1 - self.settings["dampening"], 1.0).to(dtype)
            self.momentum = self.momentum.to(dtype)
        self.decay = (1 - self.lr * self.wd).to(dtype) if self.kind == "AdamW" else self.wd.to(dtype)
        self.rate = self.lr.to(dtype)

    def keep(self, members: Tensor, flat: Tensor) -> None:
        self.flat = flat
        self.optimizers = [self.optimizers[m] for m in members.tolist()]
        self.groups = [self.groups[m] for m in members.tolist()]
        self.state = {k: v[members] for k, v in self.state.items()}
        self.read_rates()

    @torch.no_grad()
    def step(self) -> None:
        self.step_count += 1
        p, grad = self.flat, self.flat.grad
        if self.kind == "SGD":
            self.sgd(p, grad)
        else:
            self.adam(p, grad)

    def sgd(self, p: Tensor, grad: Tensor) -> None:
        grad = grad + p * self.decay  # + wd * p
        if self.uses_momentum:  # a member without momentum keeps buffer = its gradient: the same step
            if "momentum_buffer" not in self.state:
                self.state["momentum_buffer"] = grad.clone()
            else:  # torch damps only with momentum
                self.state["momentum_buffer"].mul_(self.momentum).add_(grad * self.kept)
            buffer = self.state["momentum_buffer"]
            grad = grad + self.momentum * buffer if self.settings["nesterov"] else buffer
        p.sub_(self.rate * grad)

    def adam(self, p: Tensor, grad: Tensor) -> None:
        (beta1, beta2), eps = self.settings["betas"], self.settings["eps"]
        if not self.state:
            self.state["exp_avg"], self.state["exp_avg_sq"] = torch.zeros_like(p), torch.zeros_like(p)
        if self.kind == "AdamW":
            p.mul_(self.decay)  # 1 - lr * wd
        else:
            grad = grad + p * self.decay  # + wd * p
        self.state["exp_avg"].lerp_(grad, 1 - beta1)
        self.state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        bias_correction1 = 1 - beta1 ** self.step_count
        bias_correction2_sqrt = math.sqrt(1 - beta2 ** self.step_count)
        denom = (self.state["exp_avg_sq"].sqrt() / bias_correction2_sqrt).add_(eps)
        p.sub_(self.rate * (1 / bias_correction1) * self.state["exp_avg"] / denom)  # addcdiv: lr / bc1 * t1 / t2

    def member_state(self, m: int, optimizer: torch.optim.Optimizer, member_params: dict[str, Tensor],
                     names: Sequence[str], sizes: Sequence[int]) -> None:
        """Member ``m``'s optimizer state into its own ``optimizer`` (for its checkpoint), as torch keeps it."""
        parts = {k: v[m].split(list(sizes)) for k, v in self.state.items()}
        start = 0
        for j, (name, size) in enumerate(zip(names, sizes, strict=True)):
            param = member_params[name]
            own = {k: v[j].view_as(param).clone() for k, v in parts.items()}
            if self.kind != "SGD":
                own["step"] = torch.tensor(float(self.step_count))
            elif self.momentum[m, start] == 0:
                own["momentum_buffer"] = None
            optimizer.state[param] = own
            start += size

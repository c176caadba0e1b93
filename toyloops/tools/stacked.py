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
    """N copies of one net as stacked parameters (M, *shape): Linear layers by ``torch.baddbmm``, the
    activation as the net's own module, Dropout with a rate and a random stream per member."""

    def __init__(self, nets: Sequence[nn.Module], generators: Sequence[torch.Generator]) -> None:
        super().__init__()
        self.names = [name for name, _ in nets[0].named_parameters()]
        self.stacked = nn.ParameterList(
            [torch.stack([dict(net.named_parameters())[name].detach() for net in nets]) for name in self.names])
        self.plan: list[tuple[str, Any]] = []  # ("linear", (weight index, bias index or None)) / ("apply", module)
        index = {name: i for i, name in enumerate(self.names)}
        rates: list[list[float]] = []
        for prefix, module in nets[0].named_modules():
            if isinstance(module, nn.Linear):
                bias = index.get(f"{prefix}.bias")
                self.plan.append(("linear", (index[f"{prefix}.weight"], bias)))
            elif isinstance(module, nn.Dropout):
                self.plan.append(("dropout", len(rates)))
                rates.append([dict(net.named_modules())[prefix].p for net in nets])
            elif not list(module.children()):
                self.plan.append(("apply", module))
        self.rates = [torch.tensor(r) for r in rates]  # (M,) per Dropout layer
        self.generators = list(generators)
        self.squeeze = nets[0](torch.zeros(1, self.stacked[0].shape[-1])).ndim == 1  # one logit / one output

    def forward(self, x: Tensor) -> Tensor:
        """(M, B, F) -> (M, B, C), or (M, B) where the solo net returns (B,)."""
        h = x
        for kind, what in self.plan:
            if kind == "linear":
                weight, bias = (self.stacked[i] if i is not None else None for i in what)
                h = torch.bmm(h, weight.transpose(1, 2)) if bias is None else \
                    torch.baddbmm(bias.unsqueeze(1), h, weight.transpose(1, 2))  # h @ W^T + b, per member
            elif kind == "dropout":
                h = self.dropout(h, self.rates[what])
            else:
                h = what(h)
        return h.squeeze(-1) if self.squeeze else h

    def dropout(self, h: Tensor, rates: Tensor) -> Tensor:
        """F.dropout's mask, member by member: bernoulli(1 - p) / (1 - p) drawn from the member's stream
        in the shape the solo net draws it, so each member's masks are its solo run's."""
        if not self.training or not bool((rates > 0).any()):
            return h
        noise = []
        for m, p in enumerate(rates.tolist()):
            if p == 0.0:
                noise.append(torch.ones(h.shape[1:], dtype=h.dtype))
            else:  # as at::native::dropout: an empty tensor's bernoulli_(1 - p), divided by (1 - p)
                noise.append(torch.empty(h.shape[1:], dtype=h.dtype).bernoulli_(1 - p, generator=self.generators[m])
                             .div_(1 - p))
        return h * torch.stack(noise)

    def member_state(self, m: int) -> dict[str, Tensor]:
        """Member ``m``'s weights under the solo net's parameter names."""
        return {name: p[m] for name, p in zip(self.names, self.stacked, strict=True)}

    def keep(self, members: Tensor) -> None:
        """Only these members stay (the rest stopped): every stacked tensor indexed by them."""
        for i, p in enumerate(self.stacked):
            self.stacked[i] = nn.Parameter(p.detach()[members])
        self.rates = [r[members] for r in self.rates]
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


def clip_gradients(grads: list[Tensor], value: float, algorithm: str) -> None:
    """``clip_grad_norm_`` / ``clip_grad_value_`` per member: each member's norm over all its gradients."""
    if algorithm == "value":
        for g in grads:
            g.clamp_(-value, value)
        return
    norms = torch.stack([torch.linalg.vector_norm(g.flatten(1), dim=1) for g in grads], dim=1)  # (M, params)
    total = torch.linalg.vector_norm(norms, dim=1)
    scale = torch.clamp(value / (total + 1e-6), max=1.0)
    for g in grads:
        g.mul_(scale.view(-1, *[1] * (g.ndim - 1)))


class StackedOptimizer:
    """One update of every member's parameters: ``torch.optim``'s single-tensor SGD, Adam or AdamW with
    each member's learning rate, weight decay (and SGD momentum) read, per parameter, from its own
    optimizer's parameter groups (members may group their parameters differently: ``decay_biases``)."""

    def __init__(self, params: Sequence[Tensor], optimizers: Sequence[torch.optim.Optimizer],
                 names: Sequence[str], member_params: Sequence[dict[str, Tensor]]) -> None:
        self.params, self.optimizers = list(params), list(optimizers)
        self.kind = type(optimizers[0]).__name__
        self.groups = []  # per member: the group holding each stacked parameter
        for opt, own in zip(optimizers, member_params, strict=True):
            group_of = {id(p): g for g, group in enumerate(opt.param_groups) for p in group["params"]}
            self.groups.append([group_of[id(own[name])] for name in names])
        self.settings = self.shared_settings()
        self.state: list[dict[str, Tensor]] = [{} for _ in self.params]
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

    def per_parameter(self, key: str) -> Tensor:
        """(M, parameters): each member's group value of ``key`` for each stacked parameter, in float64."""
        return torch.tensor([[opt.param_groups[g][key] for g in groups]
                             for opt, groups in zip(self.optimizers, self.groups, strict=True)], dtype=torch.float64)

    def read_rates(self) -> None:
        """Learning rate, weight decay and momentum: after a scheduler step, read again."""
        self.lr, self.wd = self.per_parameter("lr"), self.per_parameter("weight_decay")
        self.momentum = self.per_parameter("momentum") if self.kind == "SGD" else None

    def keep(self, members: Tensor, params: Sequence[Tensor]) -> None:
        self.params = list(params)
        self.optimizers = [self.optimizers[m] for m in members.tolist()]
        self.groups = [self.groups[m] for m in members.tolist()]
        self.state = [{k: v[members] for k, v in state.items()} for state in self.state]
        self.read_rates()

    @torch.no_grad()
    def step(self) -> None:
        self.step_count += 1
        for j, (p, state) in enumerate(zip(self.params, self.state, strict=True)):
            shape = (-1, *[1] * (p.ndim - 1))
            lr, wd = self.lr[:, j].view(shape), self.wd[:, j].view(shape)  # float64, as Python's floats
            if self.kind == "SGD":
                self.sgd(p, p.grad, lr, wd, self.momentum[:, j].view(shape), state)
            else:
                self.adam(p, p.grad, lr, wd, state)

    def sgd(self, p: Tensor, grad: Tensor, lr: Tensor, wd: Tensor, momentum: Tensor, state: dict[str, Tensor]) -> None:
        dampening, nesterov = self.settings["dampening"], self.settings["nesterov"]
        grad = grad + p * wd.to(p.dtype)
        if bool((momentum > 0).any()):  # a member without momentum keeps buffer = its gradient: the same step
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = grad.clone()
            else:
                kept = torch.where(momentum > 0, 1 - dampening, 1.0).to(p.dtype)  # torch damps only with momentum
                state["momentum_buffer"].mul_(momentum.to(p.dtype)).add_(grad * kept)
            buffer = state["momentum_buffer"]
            grad = grad + momentum.to(p.dtype) * buffer if nesterov else buffer
        p.sub_(lr.to(p.dtype) * grad)

    def adam(self, p: Tensor, grad: Tensor, lr: Tensor, wd: Tensor, state: dict[str, Tensor]) -> None:
        (beta1, beta2), eps = self.settings["betas"], self.settings["eps"]
        if not state:
            state["exp_avg"], state["exp_avg_sq"] = torch.zeros_like(p), torch.zeros_like(p)
        if self.kind == "AdamW":
            p.mul_((1 - lr * wd).to(p.dtype))
        else:
            grad = grad + p * wd.to(p.dtype)
        state["exp_avg"].lerp_(grad, 1 - beta1)
        state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        bias_correction1 = 1 - beta1 ** self.step_count
        bias_correction2_sqrt = math.sqrt(1 - beta2 ** self.step_count)
        denom = (state["exp_avg_sq"].sqrt() / bias_correction2_sqrt).add_(eps)
        p.sub_((lr / bias_correction1).to(p.dtype) * state["exp_avg"] / denom)  # addcdiv's value * t1 / t2

    def member_state(self, m: int, optimizer: torch.optim.Optimizer, member_params: dict[str, Tensor],
                     names: Sequence[str]) -> None:
        """Member ``m``'s optimizer state into its own ``optimizer`` (for its checkpoint), as torch keeps it."""
        for j, (name, state) in enumerate(zip(names, self.state, strict=True)):
            own = {k: v[m].clone() for k, v in state.items()}
            if self.kind != "SGD":
                own["step"] = torch.tensor(float(self.step_count))
            elif self.momentum[m, j] == 0:
                own["momentum_buffer"] = None
            optimizer.state[member_params[name]] = own

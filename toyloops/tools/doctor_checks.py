"""The checks of ``toyloops doctor`` (:mod:`toyloops.tools.doctor` runs them and writes the report).

Each check returns one :class:`Check`: a name, pass / warn / fail, the number it measured and what
that number is read against. The training checks drive the module through the chosen engine
(Lightning's Trainer or the hand trainer) with :class:`Recorder`, a Lightning callback both engines
call, so a bug in a module's hooks shows as it would in a real run.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, NamedTuple

import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn

PASS, WARN, FAIL = "pass", "warn", "fail"
GRADIENT_STEPS = 3  # the first steps whose gradient is recomputed from the batch alone


class Check(NamedTuple):
    """One line of the report: ``name``, ``status`` (pass / warn / fail), the measured ``number`` and ``detail``."""

    name: str
    status: str
    number: str
    detail: str

    def line(self) -> str:
        return f"{self.status.upper():<5} {self.name:<24} {self.number:<28} {self.detail}"


def grade(value: float, warn_at: float, fail_at: float) -> str:
    """pass below ``warn_at``, warn below ``fail_at``, fail from there on (a NaN fails)."""
    return PASS if value < warn_at else WARN if value < fail_at else FAIL


def loss_of(output: Any) -> Tensor:
    """The loss a ``training_step`` returned (a tensor or a dict holding ``loss``), as both engines read it."""
    return output["loss"] if isinstance(output, dict) else output


def graph_nodes(owner: object, limit: int = 1_000_000) -> int:
    """Autograd nodes reachable from the tensors ``owner`` holds in its attributes (one level into lists,
    tuples and dicts): a graph that outlives its step keeps every activation it saved alive."""
    held = [v for value in vars(owner).values() if not isinstance(value, nn.Module)
            for v in (value.values() if isinstance(value, dict) else value if isinstance(value, list | tuple)
                      else [value])]
    todo = [t.grad_fn for t in held if isinstance(t, Tensor) and t.grad_fn is not None]
    seen: set[int] = set()
    while todo and len(seen) < limit:
        node = todo.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        todo.extend(next_node for next_node, _ in node.next_functions)
    return len(seen)


class Recorder(Callback):
    """What a doctor's training run records, step by step, through hooks both engines call: the loss, the lr,
    the update's size, the graph the module holds after each step; on the first step every parameter's
    gradient and each layer's activations; on the first :data:`GRADIENT_STEPS` steps, the gradient the
    optimizer was handed next to the gradient of the step's batch alone, clipped as the trainer clips.
    ``lrs`` (one per step) sets the lr."""

    def __init__(self, lrs: list[float] | None = None) -> None:
        self.set_lrs = lrs
        self.losses: list[float] = []
        self.lrs: list[float] = []
        self.update_ratios: list[float] = []
        self.held_nodes: list[int] = []
        self.gradient_errors: list[float] = []
        self.zero_gradients: list[str] = []
        self.activations: dict[str, tuple[int, int, bool]] = {}  # layer -> (dead units, units, all zero)
        self.hooks: list[Any] = []

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self.batch, self.batch_idx, self.rng = batch, batch_idx, torch.get_rng_state()
        self.device = pl_module.device
        self.cuda_rng = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        self.before = torch.cat([p.detach().flatten().clone() for p in pl_module.parameters()])
        if not self.losses:
            self.hooks = [module.register_forward_hook(self.activation_hook(name))
                          for name, module in pl_module.named_modules() if not list(module.children())]

    def activation_hook(self, name: str):  # noqa: ANN201 - a forward hook
        def record(module: nn.Module, inputs: Any, output: Any) -> None:
            if isinstance(output, Tensor) and output.is_floating_point() and output.ndim >= 2 and output.numel():
                units = output.detach().reshape(-1, output.shape[-1])
                self.activations[name] = (int((units == 0).all(dim=0).sum()), units.shape[1],
                                          bool((units == 0).all()))
        return record

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: torch.optim.Optimizer) -> None:
        step = len(self.lrs)
        if self.set_lrs is not None:
            for group in optimizer.param_groups:
                group["lr"] = self.set_lrs[min(step, len(self.set_lrs) - 1)]
        self.lrs.append(float(optimizer.param_groups[0]["lr"]))
        named = [(n, p) for n, p in pl_module.named_parameters() if p.requires_grad]
        if step == 0:
            self.zero_gradients = [n for n, p in named if p.grad is None or not p.grad.any()]
        self.fresh = self.batch_gradient(trainer, pl_module, named) if step < GRADIENT_STEPS else None

    def batch_gradient(self, trainer: Any, pl_module: Any, named: list[tuple[str, Tensor]]) -> list[Tensor]:
        """The gradient of this step's batch alone, at the same weights and the same random draws (dropout),
        clipped as the trainer clips: what the optimizer should be handed."""
        precision, device = str(getattr(trainer, "precision", "")), self.device
        dtype = torch.bfloat16 if "bf16" in precision else torch.float16 if precision.startswith("16") else None
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.enable_grad(), \
                torch.autocast(device.type, dtype, enabled=dtype is not None):
            torch.set_rng_state(self.rng)
            if self.cuda_rng is not None:
                torch.cuda.set_rng_state(self.cuda_rng, device)
            loss = loss_of(pl_module.training_step(self.batch, self.batch_idx))
            fresh = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
        fresh = [torch.zeros_like(p) if g is None else g.detach() for (_, p), g in zip(named, fresh, strict=True)]
        clip = getattr(trainer, "gradient_clip_val", None)
        if clip and getattr(trainer, "gradient_clip_algorithm", "norm") == "value":
            return [g.clamp(-clip, clip) for g in fresh]
        if clip:  # as nn.utils.clip_grad_norm_ scales
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in fresh]))
            return [g * (clip / (norm + 1e-6)).clamp(max=1.0) for g in fresh]
        return fresh

    def handed_gradient_error(self, pl_module: Any) -> float:
        """max |handed - expected| / max |expected| over the parameters, after the optimizer's step (the
        gradient stays in ``.grad`` until the next step zeroes it)."""
        handed = [p.grad if p.grad is not None else torch.zeros_like(p) for p in pl_module.parameters()
                  if p.requires_grad]
        if not all(h.isfinite().all() for h in handed):
            return 0.0  # a step a GradScaler skipped (fp16 overflow): nothing was applied
        scale = max((g.abs().max().item() for g in self.fresh), default=0.0) or 1.0
        return max(((h - f).abs().max().item() for h, f in zip(handed, self.fresh, strict=True)), default=0.0) / scale

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        for hook in self.hooks:
            hook.remove()
        self.hooks = []
        self.losses.append(float(loss_of(outputs)))
        if getattr(self, "fresh", None) is not None:
            self.gradient_errors.append(self.handed_gradient_error(pl_module))
        after = torch.cat([p.detach().flatten() for p in pl_module.parameters()])
        self.update_ratios.append(((after - self.before).norm() / (self.before.norm() + 1e-12)).item())
        self.held_nodes.append(graph_nodes(pl_module))


# -- the data ---------------------------------------------------------------------------------------------


def class_balance(splits: dict[str, tuple[Tensor, Tensor]], num_classes: int) -> Check:
    """Each split's smallest and largest class share; a class missing from a split fails."""
    shares = {name: torch.bincount(y, minlength=num_classes).float() / max(len(y), 1)
              for name, (_, y) in splits.items() if len(y)}
    missing = [f"{name} lacks class {c}" for name, s in shares.items() for c in range(num_classes) if s[c] == 0]
    spread = max(abs(s - shares["train"]).max().item() for s in shares.values())
    number = ", ".join(f"{name} {s.min():.2f}-{s.max():.2f}" for name, s in shares.items())
    status = FAIL if missing else grade(spread, 0.10, 0.25)
    return Check("class balance", status, f"max share gap {spread:.3f}",
                 "; ".join(missing) or f"class shares per split: {number} (1/C = {1 / num_classes:.2f})")


def disjoint_splits(splits: dict[str, tuple[Tensor, Tensor]]) -> Check:
    """Samples whose input appears in two splits (exact rows)."""
    rows = {name: {tuple(row) for row in x.reshape(len(x), -1).tolist()} for name, (x, _) in splits.items() if len(x)}
    shared = {f"{a}&{b}": len(rows[a] & rows[b]) for a in rows for b in rows if a < b}
    total, val = sum(shared.values()), max(len(rows.get("val", ())), 1)
    detail = ", ".join(f"{pair} {n}" for pair, n in shared.items())
    return Check("splits disjoint", FAIL if total > 0.01 * val else WARN if total else PASS,
                 f"{total} shared samples", f"inputs found in two splits: {detail}")


def train_only_statistics(transform: Any, raw: tuple[Tensor, Tensor, Tensor] | None) -> Check:
    """The train inputs as the data module prepares them do not change when only val and test change:
    whatever it standardises by comes from the train split. ``transform``: the data module's (on a copy)."""
    if raw is None:
        return Check("train-only statistics", WARN, "n/a", "not a ToyDataModule: its raw splits are unknown here")
    train, val, test = raw
    if not train.is_floating_point():
        return Check("train-only statistics", PASS, "n/a", "inputs are token ids: nothing standardised")
    before = transform(train, val, test)[0]
    after = transform(train, val * 3 + 1, test * 3 + 1)[0]
    moved = (before - after).abs().max().item()
    return Check("train-only statistics", FAIL if moved > 0 else PASS, f"train moved {moved:.3g}",
                 "the train inputs when val and test are scaled by 3 and shifted by 1 (0: statistics from train only)")


def batches_mix_classes(batches: Iterable[tuple[Tensor, Tensor]], num_classes: int) -> Check:
    """The share of one epoch's train batches that hold a single class (sorted data never shuffled)."""
    labels = [y for _, y in batches]
    single = sum(len(y.unique()) == 1 for y in labels if len(y) > 1)
    share = single / max(len(labels), 1)
    return Check("batches mix classes", grade(share, 0.05, 0.25), f"{single}/{len(labels)} one-class batches",
                 f"train batches of one epoch that hold a single class of {num_classes}")


# -- the model --------------------------------------------------------------------------------------------


def batch_independence(net: nn.Module, x: Tensor) -> Check:
    """d(output of sample 0)/d(input of every other sample) is zero (autograd, eval mode); for token ids,
    sample 0's output is unchanged when the others' tokens change."""
    net.eval()
    if x.is_floating_point():
        x = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(net(x)[0].sum(), x)
        leak = grad[1:].abs().max().item()
    else:
        with torch.no_grad():
            changed = torch.cat([x[:1], x[1:].roll(1, dims=-1).flip(0)])
            leak = (net(x)[0] - net(changed)[0]).abs().max().item()
    net.train()
    return Check("batch independence", FAIL if leak > 1e-6 else PASS, f"max leak {leak:.3g}",
                 f"sample 0's output against the other {len(x) - 1} inputs of its batch (must be 0)")


def initial_loss(loss: float, expected: float, what: str) -> Check:
    """The first step's loss against what an uninformed model scores."""
    ratio = loss / expected if expected > 0 else math.inf
    off = abs(math.log(ratio)) if ratio > 0 and math.isfinite(ratio) else math.inf
    return Check("loss at init", grade(off, math.log(1.5), math.log(4)), f"{loss:.4f} vs {expected:.4f}",
                 f"first step's loss; expected {what}")


def gradients_reach_parameters(recorder: Recorder) -> Check:
    zero = recorder.zero_gradients
    return Check("gradients", FAIL if zero else PASS, f"{len(zero)} without gradient",
                 "no gradient or all zero: " + ", ".join(zero) if zero else "every parameter has a non-zero gradient")


def live_activations(recorder: Recorder) -> Check:
    acts = recorder.activations
    dead = [name for name, (_, _, all_zero) in acts.items() if all_zero]
    worst = max(acts.items(), key=lambda kv: kv[1][0] / kv[1][1], default=(None, (0, 1, False)))
    share = worst[1][0] / worst[1][1]
    return Check("live activations", FAIL if dead else grade(share, 0.5, 1.0), f"{len(dead)} dead layers",
                 "all-zero output: " + ", ".join(dead) if dead else
                 f"most dead units in one layer: {worst[1][0]}/{worst[1][1]}" + (f" ({worst[0]})" if worst[0] else ""))


def step_gradient(recorder: Recorder, tolerance: float) -> Check:
    error = max(recorder.gradient_errors, default=0.0)
    return Check("step gradient", FAIL if error > tolerance else PASS, f"max rel. error {error:.3g}",
                 f"the gradient the optimizer applied in each of the first {len(recorder.gradient_errors)} steps "
                 "against its batch's own, clipped as the trainer clips")


def graph_freed(recorder: Recorder) -> Check:
    held = recorder.held_nodes
    most = max(held, default=0)
    return Check("graph freed", FAIL if most > 0 else PASS, f"{most} nodes held",
                 f"autograd nodes the module keeps after a step (first {held[0] if held else 0}, most {most} over "
                 f"{len(held)} steps): a graph kept alive grows memory every step")


def update_size(ratios: list[float]) -> Check:
    """Median |update| / |weights| a step (Karpathy's rule of thumb: around 1e-3)."""
    finite = sorted(r for r in ratios if math.isfinite(r))
    median = finite[len(finite) // 2] if finite else math.nan
    status = FAIL if not finite or median < 1e-6 or median > 0.5 else WARN if median < 1e-5 or median > 0.1 else PASS
    return Check("update size", status, f"median {median:.3g}", "|update| / |weights| per step (about 1e-3 is usual)")


def beats_zeroed_input(real: float, zeroed: float) -> Check:
    ratio = real / zeroed if zeroed > 0 else math.inf
    return Check("beats zeroed input", grade(ratio, 0.8, 0.95), f"val loss {real:.4f} vs {zeroed:.4f}",
                 "after the same steps on real inputs and on zeroed ones (ratio must be well below 1)")


def overfits_one_batch(first: float, last: float, steps: int) -> Check:
    ratio = last / first if first > 0 else math.inf
    return Check("overfit one batch", grade(ratio, 0.1, 0.3), f"{first:.4f} -> {last:.4g}",
                 f"loss on one batch after {steps} steps on it (must fall below 10% of where it started)")


def lr_schedule(lrs: list[float]) -> Check:
    """Troughs in the run's lr (it falls, then rises again): a per-epoch schedule stepped per batch cycles."""
    changes = [b - a for a, b in zip(lrs, lrs[1:], strict=False) if abs(b - a) > 1e-12 * max(abs(a), 1e-30)]
    troughs = sum(a < 0 < b for a, b in zip(changes, changes[1:], strict=False))
    return Check("lr schedule", FAIL if troughs >= 2 else WARN if troughs else PASS, f"{troughs} troughs",
                 f"over the run's {len(lrs)} steps, lr {lrs[0]:.3g} -> {lrs[-1]:.3g}" if lrs else "no steps")


def lr_range(lrs: list[float], losses: list[float], configured: float) -> tuple[Check, dict[str, float]]:
    """The loss over an exponential lr sweep: where it falls fastest and where it blows up, against the
    configured lr."""
    smooth, value = [], None
    for loss in losses:
        value = loss if value is None else 0.7 * value + 0.3 * loss
        smooth.append(value)
    n = len(smooth)
    best = min(range(n), key=lambda i: smooth[i]) if n else 0
    blown = next((i for i in range(best, n) if not math.isfinite(smooth[i]) or smooth[i] > 4 * smooth[best]), None)
    diverge = lrs[blown] if blown is not None else math.inf
    slopes = [(smooth[i + 3] - smooth[i]) / math.log(lrs[i + 3] / lrs[i]) for i in range(min(best, n - 3))]
    fastest = min(range(len(slopes)), key=lambda i: slopes[i]) if slopes else 0
    span = (lrs[fastest], lrs[min(fastest + 3, n - 1)]) if n else (math.nan, math.nan)
    status = (FAIL if configured >= diverge else
              WARN if configured >= diverge / 3 or configured > 100 * span[1] else PASS)
    number = f"lr {configured:.3g}, blows up at {diverge:.3g}" if blown is not None else f"lr {configured:.3g}"
    return (Check("lr range", status, number, f"loss falls fastest at lr {span[0]:.3g}-{span[1]:.3g}; lowest at "
                  f"{lrs[best]:.3g}" if n else "no steps"),
            {"fastest_low": span[0], "fastest_high": span[1], "lowest": lrs[best] if n else math.nan,
             "diverges": diverge})


def eval_mode(flags: list[bool], losses: list[float]) -> Check:
    """During validation no dropout or batch-norm layer is in train mode, and two passes give the same loss."""
    in_train = sum(flags)
    gap = abs(losses[0] - losses[1]) if len(losses) == 2 else 0.0
    return Check("eval mode", FAIL if in_train or gap > 1e-6 else PASS, f"{in_train} layers in train mode",
                 f"dropout / norm layers in train mode while validating; two val passes differ by {gap:.3g}")


def baselines(score: float, rates: dict[str, float], metric: str) -> Check:
    """The run's final val score against its data's stated baselines."""
    shown = ", ".join(f"{k} {v:.4f}" for k, v in rates.items())
    if not math.isfinite(score):
        return Check("baselines", WARN, f"no {metric}", f"the run logs no {metric} to read against: {shown}")
    if metric == "val/acc":
        floor, bayes = rates.get("majority", rates.get("chance", 0.0)), rates.get("bayes")
        status = FAIL if score <= floor + 0.02 else WARN if bayes is not None and score < bayes - 0.05 else PASS
    else:  # a loss: below the mean predictor, near the noise
        floor, bayes = rates.get("mean_mse", math.inf), rates.get("bayes_mse")
        status = FAIL if score >= 0.5 * floor else WARN if bayes is not None and score > 2 * bayes else PASS
    return Check("baselines", status, f"{metric} {score:.4f}", f"after the full run; baselines: {shown}")

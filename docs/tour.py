# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # A tour of toyloops
#
# The whole story in order, with the code beside each picture: the toy sets, one run trained by
# Lightning and by a loop written out in plain PyTorch (bit-identical weights), the same steps once
# more in NumPy, a decision boundary taking shape, a bug from the zoo and the two tools that find it
# (doctor, diff), and what a single run cannot tell you (seeds, sweeps). Every number shown is asserted
# in the cell that shows it, and the test suite runs this notebook top to bottom (`tests/test_tour.py`),
# so it cannot drift from the code.
#
# This page is `docs/tour.py`, a [jupytext](https://jupytext.readthedocs.io) notebook:
# `toyloops tour` builds `tour.ipynb` from it, executed, to open in Jupyter (see
# [Testing](testing.md) for how the suite and the site run it). It runs in a temporary folder, so the
# runs it trains leave nothing behind.

# %%
import contextlib
import importlib.util
import io
import logging
import os
import tempfile
import warnings
from functools import partial
from pathlib import Path

import lightning  # noqa: F401 - before the levels below: importing it sets them to INFO
import matplotlib.pyplot as plt
import numpy as np
import torch
import yaml

import toyloops

ROOT = Path(toyloops.__file__).resolve().parents[1]  # the clone: configs/ and examples/ live here
CONFIGS = ROOT / "configs"
WORK = tempfile.TemporaryDirectory(prefix="toyloops-tour-")  # removed when the kernel stops
os.chdir(WORK.name)  # every run below writes its logs/ here
for name in ("lightning.pytorch", "lightning.fabric"):  # "Seed set to 0", "GPU available: ...": set on import
    logging.getLogger(name).setLevel(logging.ERROR)
warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm, imported by Optuna, wants ipywidgets
plt.rcParams.update({"figure.dpi": 80, "axes.titlesize": 10})


def quietly():
    """Hide what a run prints (progress, summaries): the cells print what matters."""
    return contextlib.redirect_stdout(io.StringIO())


# %% [markdown]
# ## 1. The toy sets
#
# Each set is a pure function of a seed (`toyloops/core/data.py`); a data module splits it and
# standardises every split with the train split's statistics. Beside each, the accuracies a model is
# judged against: **chance** (1/classes), **majority** (always answer the validation split's most
# common class) and **Bayes** (the best any model can do, where it is known: the blobs overlap, the
# others are separable without jitter).

# %%
from toyloops import PointsDataModule, SequenceDataModule

points = {
    "blobs": PointsDataModule("blobs"),
    "circles": PointsDataModule("circles"),
    "moons": PointsDataModule("moons", noise=0.1),
    "spirals": PointsDataModule("spirals"),
    "xor": PointsDataModule("xor"),
}
fig, axes = plt.subplots(1, 5, figsize=(15, 3.2))
for ax, (name, dm) in zip(axes, points.items(), strict=True):
    x, y = dm.splits["train"]
    ax.scatter(x[:, 0], x[:, 1], c=y, cmap="coolwarm", s=4)
    ax.set_title(name)
    ax.set_xticks([])
    ax.set_yticks([])
plt.show()


def baseline_row(name, dm):
    rates = dm.baselines
    return f"{name:<10}" + "".join(f"{rates[k]:>10.3f}" if k in rates else f"{'-':>10}"
                                   for k in ("chance", "majority", "bayes"))


print(f"{'set':<10}{'chance':>10}{'majority':>10}{'bayes':>10}")
rows = [baseline_row(name, dm) for name, dm in points.items()]
print("\n".join(rows))
assert rows == ["blobs          0.500     0.555     0.994",
                "circles        0.500     0.565     1.000",
                "moons          0.500     0.555         -",
                "spirals        0.500     0.555     1.000",
                "xor            0.500     0.555     1.000"]

# %% [markdown]
# The token tasks feed a Transformer: sequences of 16 tokens, and a yes/no question about each.
# `majority` (are most tokens below 25?) is learnt to 98%; `parity` (is the sum odd?) stays at chance
# with this model, on purpose (see [Run configs](configs.md)).

# %%
tasks = {task: SequenceDataModule(task) for task in ("parity", "majority", "contains")}
fig, axes = plt.subplots(1, 3, figsize=(15, 2.6))
for ax, (task, dm) in zip(axes, tasks.items(), strict=True):
    tokens, labels = dm.splits["train"]
    ax.imshow(torch.cat([tokens[:12], 50 * labels[:12, None]], dim=1), cmap="viridis")
    ax.set_title(f"{task}: 12 sequences, the label in the last column")
    ax.set_xticks([])
    ax.set_yticks([])
plt.show()
rows = [baseline_row(task, dm) for task, dm in tasks.items()]
print("\n".join(rows))
assert rows == ["parity         0.500     0.507     1.000",
                "majority       0.500     0.610     1.000",
                "contains       0.500     0.706     1.000"]

# %% [markdown]
# ## 2. The minimal pair: one run, two ways
#
# `examples/minimal_lightning.py` trains `configs/blobs_mlp.yaml` with a LightningModule and
# `Trainer.fit`; `examples/minimal_torch.py` is the same run with the loop written out (read them
# side by side: `diff -y -W 200 examples/minimal_torch.py examples/minimal_lightning.py`). Both
# print their last validation accuracy; their weights come out equal, bit for bit.

# %%
def load_example(name):
    """Import ``examples/<name>.py`` as a module (its ``__main__`` block does not run)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


torch_net = load_example("minimal_torch").main()
lightning_net = load_example("minimal_lightning").main()
lightning_weights = dict(lightning_net.named_parameters())
equal = {name: torch.equal(weight, lightning_weights[name]) for name, weight in torch_net.named_parameters()}
print(equal)
assert list(equal) == ["layers.0.weight", "layers.0.bias", "layers.3.weight", "layers.3.bias", "layers.6.weight",
                       "layers.6.bias"]
assert all(equal.values())

# %% [markdown]
# The package's two engines do the same for a whole config: `toyloops compare` trains it with
# Lightning (`train.py`, a `LightningCLI`) and with `HandTrainer`, the hand-written loop shaped like
# `L.Trainer`. Both write the same TensorBoard tags at the same steps, so their curves overlay:
# the thick line is Lightning's, the dashed one the hand loop's.

# %%
from toyloops.tools.compare import compare, max_weight_difference, scalars

with quietly():
    runs = compare(["--config", str(CONFIGS / "blobs_mlp.yaml"), "--dashboard.boundary_every_n_epochs", "0"])
curves = {engine: scalars(run["run_dir"]) for engine, run in runs.items()}
fig, axes = plt.subplots(1, 2, figsize=(12, 3.5))
for ax, tag in zip(axes, ("train/loss", "val/loss"), strict=True):
    for engine, style in (("lightning", {"lw": 5, "alpha": 0.35}), ("loop", {"lw": 1.5, "ls": "--"})):
        steps, values = zip(*curves[engine][tag], strict=True)
        ax.plot(steps, values, label=engine, **style)
    ax.set_title(tag)
    ax.set_xlabel("step")
    ax.legend()
plt.show()
difference = max_weight_difference(runs["lightning"]["weights"], runs["loop"]["weights"])
final = {engine: curves[engine]["val/acc"][-1][1] for engine in curves}
print(f"max |weight difference| {difference}; final val/acc: " + ", ".join(f"{k} {v:.4f}" for k, v in final.items()))
assert difference == 0.0
assert all(curves["lightning"][tag] == curves["loop"][tag] for tag in ("train/loss", "val/loss", "val/acc"))
assert f"{final['lightning']:.4f}" == f"{final['loop']:.4f}" == "0.9833"

# %% [markdown]
# ## 3. One rung lower: NumPy, gradients by hand
#
# `toyloops/tools/scratch.py` writes the forward and backward passes of a logistic regression and a
# 2-layer MLP in NumPy. Start it from the same weights as a torch MLP, feed it the hand loop's own
# batches in float64, and after an epoch of SGD the two agree to 1e-10 (the differences are rounding).

# %%
from toyloops import MLP, Classifier, HandTrainer
from toyloops.tools import scratch


class Float64Points(PointsDataModule):
    """The same points, served in float64 (``transform`` is the data module's hook for its inputs)."""

    def transform(self, *splits):
        return tuple(x.double() for x in super().transform(*splits))


def to_numpy(net, params):
    """nn.Linear keeps W transposed: (out, in); the NumPy model stores (in, out)."""
    linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    for linear, (w, b) in zip(linears, [("W1", "b1"), ("W2", "b2")], strict=True):
        params[w] = linear.weight.detach().numpy().T.copy()
        params[b] = linear.bias.detach().numpy().copy()
    return params


dm = Float64Points("blobs", n_samples=600, centers=[[-1.5, -1.0], [1.2, 1.3], [1.5, -2.0]], batch_size=32, seed=3)
torch.manual_seed(0)
net, numpy_mlp = MLP(2, 3, hidden_sizes=[16]).double(), scratch.MLP(2, 16, 3)
to_numpy(net, numpy_mlp.params)
x_train, y_train = dm.splits["train"]
batches = [(x_train[i].numpy(), y_train[i].numpy()) for i in dm.train_dataloader().indices(0).split(32)]

trainer = HandTrainer(max_epochs=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                      enable_checkpointing=False)
trainer.fit(Classifier(net, partial(torch.optim.SGD, lr=0.1)), datamodule=dm)
scratch.train_epoch(numpy_mlp, batches, lr=0.1)
torch_params = to_numpy(net, {})
differences = {name: float(np.abs(value - torch_params[name]).max()) for name, value in numpy_mlp.params.items()}
for name, diff in differences.items():
    print(f"{name}: max |NumPy - hand loop| = {diff:.1e}")
assert max(differences.values()) < 1e-10

# %% [markdown]
# The gradient check: central finite differences, `(f(w + eps) - f(w - eps)) / 2 eps` for every
# weight, against the hand-written backward pass.

# %%
x_check, y_check = batches[0]
gradient_error = {type(model).__name__: scratch.max_gradient_error(model, x_check, y_check)
                  for model in (numpy_mlp, scratch.LogisticRegression(2))}
for name, error in gradient_error.items():
    print(f"{name}: max |manual - finite difference| = {error:.1e}")
assert max(gradient_error.values()) < 1e-8

fig, ax = plt.subplots(figsize=(7, 2.6))
labels = [*(f"NumPy vs torch: {k}" for k in differences), *(f"gradient check: {k}" for k in gradient_error)]
ax.barh(labels, [*differences.values(), *gradient_error.values()], color="tab:blue")
ax.set_xscale("log")
ax.axvline(1e-10, color="tab:red", ls="--", label="1e-10")
ax.set_xlabel("largest absolute difference (log scale)")
ax.legend()
plt.show()

# %% [markdown]
# ## 4. The decision boundary taking shape
#
# `configs/spirals_mlp.yaml`: two interleaved spirals, a boundary no line can draw. Both engines draw
# the boundary into TensorBoard as they train (`--dashboard.boundary_every_n_epochs`); here the hand
# loop trains it and we read four of its images back, at epochs 1, 2, 5 and 20.

# %%
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from toyloops.engine.loop_cli import run as hand_loop


def fit_spirals(*args):
    """``toyloops loop fit --config spirals_mlp ...``: its best val/acc and boundary images by epoch."""
    with quietly():
        result = hand_loop(["fit", "--config", str(CONFIGS / "spirals_mlp.yaml"),
                            "--dashboard.boundary_every_n_epochs", "1", *args])
    events = EventAccumulator(str(result["last_checkpoint"].parent.parent), size_guidance={"images": 0}).Reload()
    images = [Image.open(io.BytesIO(event.encoded_image_string)) for event in events.Images("val/decision_boundary")]
    return result["best"], images


mlp_best, mlp_images = fit_spirals()
fig, axes = plt.subplots(1, 4, figsize=(15, 4))
for ax, epoch in zip(axes, (1, 2, 5, 20), strict=True):
    ax.imshow(mlp_images[epoch - 1])
    ax.set_title(f"MLP 64-64, after epoch {epoch}")
    ax.axis("off")
plt.show()
print(f"MLP: best val/acc {mlp_best:.3f} ({len(mlp_images)} boundary images)")
assert len(mlp_images) == 20 and f"{mlp_best:.3f}" == "1.000"

# %% [markdown]
# A logistic regression draws one straight line, whatever it is given: on the same data it peaks at
# 0.675, where always answering the majority class scores 0.535.

# %%
logistic_best, logistic_images = fit_spirals("--model.net=toyloops.LogisticRegression")
fig, axes = plt.subplots(1, 2, figsize=(8, 4))
for ax, (name, best, images) in zip(axes, (("MLP 64-64", mlp_best, mlp_images),
                                           ("logistic regression", logistic_best, logistic_images)), strict=True):
    ax.imshow(images[-1])
    ax.set_title(f"{name}: best val/acc {best:.3f}")
    ax.axis("off")
plt.show()
print(f"logistic regression: best val/acc {logistic_best:.3f}")
assert f"{logistic_best:.3f}" == "0.675"

# %% [markdown]
# ## 5. A bug, and the tools that find it
#
# `configs/blobs_mlp.yaml` anneals its learning rate with `CosineAnnealingLR(T_max=10)`, meant as ten
# epochs. The [bug zoo](zoo/scheduler_per_batch.md)'s `configs/zoo/scheduler_per_batch.yaml`, stacked on
# it, sets `scheduler_interval: step`: the same schedule stepped after every batch. Nothing fails, and
# the accuracy does not give it away. The lr curve does (TensorBoard's `lr-AdamW`, logged at every step
# here): one slow decay over ten epochs against a saw that runs down and up every 20 batches.

# %%
BUG = ["--config", str(CONFIGS / "blobs_mlp.yaml"), "--config", str(CONFIGS / "zoo" / "scheduler_per_batch.yaml")]


def fit_blobs(*args):
    """``toyloops loop fit --config blobs_mlp ...``: its best val/acc and TensorBoard scalars."""
    with quietly():
        result = hand_loop(["fit", "--config", str(CONFIGS / "blobs_mlp.yaml"), *args, "--trainer.log_every_n_steps",
                            "1", "--dashboard.boundary_every_n_epochs", "0"])
    return result["best"], scalars(result["last_checkpoint"].parent.parent)


blobs_runs = {"clean": fit_blobs(), "scheduler per batch": fit_blobs(*BUG[2:])}
fig, axes = plt.subplots(1, 2, figsize=(12, 3.5))
for ax, tag in zip(axes, ("lr-AdamW", "train/loss"), strict=True):
    for (name, (_, curves)), style in zip(blobs_runs.items(), ({"lw": 2}, {"lw": 1.5, "color": "tab:red"}),
                                          strict=True):
        steps, values = zip(*curves[tag], strict=True)
        ax.plot(steps, values, label=name, drawstyle="steps-post" if tag == "lr-AdamW" else "default", **style)
    ax.set_title(tag)
    ax.set_xlabel("step")
    ax.legend(loc="upper right", ncol=2)
axes[0].set_ylim(top=0.0125)  # room for the legend above the saw's peaks
plt.show()
per_batch = blobs_runs["scheduler per batch"][1]["lr-AdamW"]
zeros = [step for step, lr in per_batch if lr == 0]
print("best val/acc: " + ", ".join(f"{name} {best:.4f}" for name, (best, _) in blobs_runs.items()))
print(f"lr stepped per batch: 0 at steps {zeros} of {len(per_batch)}")
assert [f"{best:.4f}" for best, _ in blobs_runs.values()] == ["0.9833", "0.9867"]
assert zeros == list(range(10, 150, 20)) and len(per_batch) == 150

# %% [markdown]
# `toyloops doctor` runs the checks of Karpathy's training recipe on a config ([Doctor](doctor.md)):
# here `toyloops doctor --config blobs_mlp --config zoo/scheduler_per_batch --engine hand`, from Python.
# Sixteen checks pass; `lr schedule` counts the troughs of the run's lr, where it falls and then rises
# again, and fails from two on.

# %%
from toyloops.tools import doctor

with quietly() as printed:
    examined = doctor.run([*BUG, "--engine", "hand"])
lines = printed.getvalue().splitlines()
print("\n".join(line for line in lines if line.startswith("FAIL") or line.endswith(" fail")))
failed = [check for check in examined["checks"].values() if check.status == "fail"]
assert [(check.name, check.number) for check in failed] == [("lr schedule", "7 troughs")]
assert "16 pass, 0 warn, 1 fail" in lines

# %% [markdown]
# `toyloops diff` trains the clean config and the buggy one side by side and names the first step where
# they part, and what parted first, in the order a step computes it ([Where two trainings
# part](diff.md)); the command is `toyloops diff --config blobs_mlp --b.model.scheduler_interval step`.
# Step 0 is bit-identical; at step 1 the learning rate parts before anything else: the clean run still
# uses 0.01 (an epoch schedule waits for the epoch's end), the buggy one 0.01 · (1 + cos(π/10)) / 2.

# %%
import math

from toyloops.tools.diff import diff
from toyloops.tools.diff import report as diff_report

parted = diff(BUG[:2], BUG, engines=("hand", "hand"), max_steps=5)
print("\n".join(diff_report(parted).splitlines()[2:]))  # from "compared": the sides' lines name this machine's paths
first = parted.first
assert (first.step, first.stage, first.name) == (1, "lr", "group0")
assert first.a == 0.01 and math.isclose(first.b, 0.01 * (1 + math.cos(math.pi / 10)) / 2, rel_tol=1e-12)
assert parted.per_step[0] == dict.fromkeys(parted.per_step[0], 0.0)  # step 0: every stage bit-identical

# %% [markdown]
# ## 6. What one run cannot tell you: seeds and sweeps
#
# One run's accuracy depends on its seed. `toyloops seeds` trains a config over several seeds (the seed
# moves the data, the split, the shuffles and the init together) and reports the mean with a 95%
# confidence interval; `--vs` trains a second config on the same seeds and compares them pair by pair
# (a paired t-test). Here: a small MLP (one hidden layer of 8) against `spirals_mlp`'s 64-64, five
# seeds, ten epochs each.

# %%
from toyloops.tools import seeds, sweep

small = yaml.safe_load((CONFIGS / "spirals_mlp.yaml").read_text())
small["model"]["net"]["init_args"]["hidden_sizes"] = [8]
Path("spirals_small.yaml").write_text(yaml.safe_dump(small))
seeds_args = ["--config", str(CONFIGS / "spirals_mlp.yaml"), "--vs", "spirals_small.yaml", "--n", "5",
              "--engine", "loop", "--trainer.max_epochs", "10", "--dashboard.boundary_every_n_epochs", "0"]
with quietly() as printed:
    paired = seeds.run(seeds_args)
print("\n".join(line for line in printed.getvalue().splitlines() if line.startswith("spirals_")))

arms = list(paired["scores"])
fig, ax = plt.subplots(figsize=(6, 3.5))
for i, arm in enumerate(arms):
    summary = paired[arm]
    ax.errorbar(i, summary.mean, yerr=[[summary.mean - summary.low], [summary.high - summary.mean]], fmt="o",
                color="black", capsize=6, zorder=3)
for pair in zip(*paired["scores"].values(), strict=True):
    ax.plot(range(len(arms)), pair, color="tab:blue", alpha=0.5, marker=".")
ax.set_xticks(range(len(arms)), arms)
ax.set_ylabel("best val/acc")
ax.set_title("each seed's pair (blue), mean and 95% CI (black)")
plt.show()
difference, p = paired["difference"], paired["p"]
assert arms == ["spirals_mlp", "spirals_small"] and all(len(s) == 5 for s in paired["scores"].values())
assert paired["spirals_mlp"].mean > 0.99 and difference.low > 0 and p < 0.01

# %% [markdown]
# `toyloops sweep` searches a config's hyperparameters with Optuna (a search space in YAML,
# `toyloops/tools/spaces/mlp.yaml` here: learning rate, weight decay, hidden sizes, dropout, batch size)
# and draws Optuna's optimisation history and parameter importances. Eight short trials (Optuna's sampler
# is not seeded: each run of the tour tries other points, so only the majority class's 0.535 is asserted):

# %%
import optuna
from IPython.display import Image as Picture
from IPython.display import display

optuna.logging.set_verbosity(optuna.logging.WARNING)  # a line per trial: the summary below is enough

with quietly() as printed:
    swept = sweep.run(["--config", str(CONFIGS / "spirals_mlp.yaml"), "--space", "mlp", "--trials", "8",
                       "--name", "tour", "--engine", "loop", "--trainer.max_epochs", "5",
                       "--dashboard.boundary_every_n_epochs", "0"])
print("\n".join(line for line in printed.getvalue().splitlines() if line.startswith(("trials:", "best:"))))
for plot in swept["plots"]:
    display(Picture(filename=plot, width=640))
assert sum(swept["counts"].values()) == 8 and swept["best"] > 0.535
assert [plot.name for plot in swept["plots"]] == ["history.png", "importance.png"]

# %% [markdown]
# ## 7. Where to go next
#
# - [Run configs](configs.md): every shipped config, its accuracy against chance and Bayes.
# - [The same loop, three ways](engines.md): which line of `HandTrainer` does what the Trainer does.
# - [Outputs and TensorBoard](outputs.md): the run folders and the dashboard these pictures came from.
# - [Experiments](experiments.md): sweeps, seeds and k-fold in full.
# - [Doctor](doctor.md): every check of the recipe, what it measures and when it fails; [the bug
#   zoo](doctor.md#the-bug-zoo): fourteen classic bugs, each with its symptom and the check that catches it.
# - [Where two trainings part](diff.md): `toyloops diff` on engines, precisions, configs and two versions
#   of your code.
# - [Using toyloops from another project](library.md): `toyloops init` starts a project of your own,
#   with its net, LightningModule and data module to edit, and a passing test:

# %%
from toyloops.tools.init import run as init

project = init(["my_project"])
print("\n".join(sorted(str(path.relative_to(project)) for path in project.rglob("*") if path.is_file())))
assert (project / "train.py").is_file() and (project / "tests" / "test_project.py").is_file()

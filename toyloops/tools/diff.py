"""toyloops diff --config C [--a.KEY V ...] [--b.KEY V ...] [--a.engine E] [--b.engine E] [--max_steps 20]
                 [--atol 0] [--rtol 0] [--continue] [--name N]

Trains two runs step by step and reports the first step where they part, and what parted first, in
the order a step computes it: the batch (indices, values), each submodule's forward output, the loss,
each parameter's gradient (raw, then as the optimizer step sees it), the learning rate, the clipped
gradient, the parameters after the update, the optimizer's state, the RNG streams.

  --config C, --KEY V      both sides: a run config and overrides, as for ``toyloops loop fit``
  --a.KEY V, --b.KEY V     one side only, after the shared ones: ``--b.trainer.precision bf16-mixed``,
                           ``--b.model.scheduler_interval step``, ``--b.model mypkg.v2.Net`` (a class path)
  --a.config, --b.config   that side's config, in place of the shared --config (two configs)
  --engine E, --a.engine E, --b.engine E   lightning (L.Trainer, the default) or hand (HandTrainer)
  --max_steps N            record up to N training steps of each side (default 20)
  --atol X, --rtol X       tolerance, as torch.isclose: |A - B| <= atol + rtol * |B| (default 0: bit-identical)
  --continue               go on past the first divergent step, to show how it grows
  --name N                 the results' folder: logs/diff/N/diff_K (default: A's config name)

Prints one screen, and writes report.txt, diff.json, divergence.png and TensorBoard scalars into the
results' folder. Exit code: 0 no divergence, 3 the runs part, 1 a user mistake (as every toyloops
command), 130/143 stopped by a signal.
"""

from __future__ import annotations

import io
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from toyloops.engine import runs
from toyloops.engine.checkpoints import write_atomic
from toyloops.engine.defaults import LOG_DIR
from toyloops.engine.loop_cli import build
from toyloops.rules.errors import ConfigError
from toyloops.tools.diff_record import ENGINES, STAGES, Step, record_run

__all__ = ["Difference", "DiffResult", "diff"]

PARTED = 3  # the exit code when the runs part (1 is a user mistake, as everywhere in toyloops)
CONFIG_FLAGS = ("--config", "-c")
ROWS = 12  # table rows on the screen; diff.json holds every one


@dataclass
class Difference:
    """One tensor past the tolerance: where, how far, and both values at its largest difference."""

    step: int
    stage: str
    name: str
    max_abs: float  # max |A - B| over the tensor (inf: a shape differs, or one side lacks it)
    a: float | None  # the values at the largest difference
    b: float | None
    index: list[int] | None = None  # where in the tensor
    note: str = ""  # "only in A", "shape (2, 3) vs (2, 4)", ...


@dataclass
class DiffResult:
    """What :func:`diff` found: the first divergence (None: none), every one seen, and per step the
    largest difference of each stage."""

    a: dict[str, Any]
    b: dict[str, Any]
    atol: float
    rtol: float
    steps: tuple[int, int]  # steps recorded by A and B
    first: Difference | None = None
    differences: list[Difference] = field(default_factory=list)
    per_step: list[dict[str, float]] = field(default_factory=list)  # step -> {stage: max |A - B|}

    parted = property(lambda self: self.first is not None)
    exit_code = property(lambda self: PARTED if self.parted else 0)

    def to_dict(self) -> dict[str, Any]:
        return {**{k: plain(v) for k, v in asdict(self).items()}, "parted": self.parted, "stages": list(STAGES)}


def plain(value: Any) -> Any:
    """JSON-safe: inf and nan as strings, tuples as lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def measure(a: Tensor | None, b: Tensor | None, atol: float, rtol: float) -> tuple[bool, Difference]:
    """Whether ``a`` and ``b`` differ past the tolerance, and by how much (step, stage, name left blank)."""
    if a is None or b is None:
        return True, Difference(0, "", "", math.inf, None, None, note="only in A" if b is None else "only in B")
    if a.shape != b.shape:
        return True, Difference(0, "", "", math.inf, None, None, note=f"shape {tuple(a.shape)} vs {tuple(b.shape)}")
    if a.numel() == 0 or (a.dtype == b.dtype and torch.equal(a, b)):  # the common case, in one op
        return False, Difference(0, "", "", 0.0, None, None)
    a64, b64 = a.double(), b.double()
    same = (a64 == b64) | (a64.isnan() & b64.isnan())
    gap = torch.where(same, 0.0, (a64 - b64).abs().nan_to_num(nan=math.inf))
    worst = int(gap.flatten().argmax())
    index = [int(i) for i in torch.unravel_index(torch.tensor(worst), a.shape)] if a.ndim else []
    beyond = bool((gap > atol + rtol * b64.abs()).any())
    return beyond, Difference(0, "", "", float(gap.flatten()[worst]), float(a64.flatten()[worst]),
                              float(b64.flatten()[worst]), index)


def compare_step(step: int, a: Step, b: Step, atol: float, rtol: float) -> tuple[dict[str, float], list[Difference]]:
    """One step's records side by side, stage by stage: each stage's largest difference, and every tensor
    past the tolerance in the order the step computes them (A's order, then what only B has)."""
    largest, beyond = {}, []
    for stage in STAGES:
        names = [n for s, n in a if s == stage] + [n for s, n in b if s == stage and (s, n) not in a]
        for name in names:
            differs, found = measure(a.get((stage, name)), b.get((stage, name)), atol, rtol)
            found.step, found.stage, found.name = step, stage, name
            largest[stage] = max(largest.get(stage, 0.0), found.max_abs)
            if differs:
                beyond.append(found)
    return largest, beyond


def diff(a: Sequence[str], b: Sequence[str] | None = None, *, engines: tuple[str, str] = ("lightning", "lightning"),
         max_steps: int = 20, atol: float = 0.0, rtol: float = 0.0, keep_going: bool = False) -> DiffResult:
    """Train side ``a`` and side ``b`` (each a ``toyloops loop fit`` command line without ``fit``: a config
    and overrides; ``b`` None: the same as ``a``) on ``engines``, up to ``max_steps`` steps each, and
    compare them step by step. B stops at the first divergent step unless ``keep_going``."""
    for engine in engines:
        if engine not in ENGINES:
            raise ConfigError(f"engine={engine!r}: expected one of {', '.join(ENGINES)}")
    if max_steps < 1:
        raise ConfigError(f"max_steps={max_steps}: expected a whole number >= 1")
    for name, value in (("atol", atol), ("rtol", rtol)):
        if not value >= 0:
            raise ConfigError(f"{name}={value}: expected a number >= 0")
    a, b = list(a), list(a if b is None else b)
    if b != a:
        build(b)  # B's mistakes said now, not after A has trained; its run builds it again, from the seed
    recorded_a = record_run(a, engines[0], max_steps)
    result = DiffResult({"engine": engines[0], "args": a}, {"engine": engines[1], "args": b}, atol, rtol, (0, 0))

    def check(step: int, record: Step) -> bool:  # B's steps as they finish; True: stop B here
        if step >= len(recorded_a):
            return True
        largest, beyond = compare_step(step, recorded_a[step], record, atol, rtol)
        result.per_step.append(largest)
        result.differences += beyond
        return bool(beyond) and not keep_going

    recorded_b = record_run(b, engines[1], max_steps, check)
    result.steps = (len(recorded_a), len(recorded_b))
    result.first = next(iter(result.differences), None)
    if result.first is None and len(recorded_a) != len(recorded_b):  # one side ran out of batches first
        step = min(result.steps)
        result.first = Difference(step, "steps", "steps run", math.inf, *map(float, result.steps),
                                  note=f"A ran {result.steps[0]} steps, B {result.steps[1]}")
        result.differences.append(result.first)
    return result


def parse(argv: list[str]) -> dict[str, Any] | None:
    """The command line as :func:`diff`'s arguments (None: help was asked for)."""
    if any(arg in ("-h", "--help") for arg in argv):
        return None
    shared: list[str] = []
    side: dict[str, dict[str, list[str]]] = {s: {"configs": [], "args": []} for s in "ab"}
    engine: dict[str, str] = {}
    options: dict[str, Any] = {"max_steps": 20, "atol": 0.0, "rtol": 0.0, "keep_going": False, "name": None}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--continue":
            options["keep_going"], i = True, i + 1
            continue
        if not arg.startswith("-"):
            raise ConfigError(f"unexpected argument {arg!r}: settings go as --key value")
        key, equals, value = arg.partition("=")
        if not equals:
            if i + 1 >= len(argv):
                raise ConfigError(f"{key} needs a value")
            value, i = argv[i + 1], i + 1
        i += 1
        name = key[2:]
        if name in ("max_steps", "atol", "rtol"):
            try:
                options[name] = (int if name == "max_steps" else float)(value)
            except ValueError:
                raise ConfigError(f"--{name}={value!r}: expected a {'whole ' * (name == 'max_steps')}number") from None
        elif name == "name":
            options["name"] = runs.check_folder_name(value)
        elif name in ("engine", "a.engine", "b.engine"):
            if value not in ENGINES:
                raise ConfigError(f"--{name}={value!r}: expected one of {', '.join(ENGINES)}")
            engine.update({s: value for s in "ab"} if name == "engine" else {name[0]: value})
        elif name[:2] in ("a.", "b.") and len(name) > 2:
            which, rest = name[0], name[2:]
            side[which]["configs" if rest == "config" else "args"] += [value] if rest == "config" else [
                f"--{rest}", value]
        else:
            shared += [key, value]
    configs = [value for key, value in zip(shared[::2], shared[1::2], strict=True) if key in CONFIG_FLAGS]
    rest = [item for key, value in zip(shared[::2], shared[1::2], strict=True) if key not in CONFIG_FLAGS
            for item in (key, value)]
    args = {}
    for s in "ab":
        chosen = side[s]["configs"] or configs
        if not chosen:
            raise ConfigError(f"side {s.upper()} has no config: give --config C (both sides) or --{s}.config C")
        args[s] = [*(item for c in chosen for item in ("--config", c)), *rest, *side[s]["args"]]
    return {"a": args["a"], "b": args["b"], "engines": (engine.get("a", "lightning"), engine.get("b", "lightning")),
            **options}


def label(result: DiffResult, which: str) -> str:
    side = getattr(result, which)
    return f"{which.upper()}: {side['engine']:<9} {' '.join(side['args'])}"


def report(result: DiffResult, folder: Path | None = None) -> str:
    """One screen: the two sides, the first divergence, a table of the divergent tensors."""
    tolerance = "bit-identical" if result.atol == result.rtol == 0 else f"atol {result.atol:g}, rtol {result.rtol:g}"
    lines = [label(result, "a"), label(result, "b"),
             f"compared {len(result.per_step)} steps ({tolerance}), in the order a step computes them:",
             "  " + " > ".join(STAGES)]
    first = result.first
    if first is None:
        lines.append(f"no divergence: every tensor of {len(result.per_step)} steps "
                     + ("is bit-identical" if result.atol == result.rtol == 0 else "is within the tolerance"))
    else:
        where = f" at {first.index}" if first.index else ""
        values = f": A {first.a:.9g}, B {first.b:.9g}" if first.a is not None else f" ({first.note})"
        lines += ["", f"first divergence: step {first.step}, {first.stage}, {first.name}",
                  f"  max |A - B| {first.max_abs:.3g}{where}{values}", ""]
        steps = {d.step for d in result.differences}
        shown = (result.differences if len(steps) == 1 else  # --continue: the first of each step
                 [next(d for d in result.differences if d.step == s) for s in sorted(steps)])
        lines.append(f"{'step':>4}  {'stage':<13}{'tensor':<32}{'max |A-B|':>10}{'A':>16}{'B':>16}")
        for d in shown[:ROWS]:
            a, b = (f"{v:>16.8g}" for v in (d.a, d.b)) if d.a is not None else (f"{d.note:>32}", "")
            lines.append(f"{d.step:>4}  {d.stage:<13}{d.name[:31]:<32}{d.max_abs:>10.3g}{a}{b}")
        if len(shown) > ROWS:
            lines.append(f"... and {len(shown) - ROWS} more rows in diff.json")
    if folder is not None:
        lines.append(f"results: {folder} (report.txt, diff.json, divergence.png, TensorBoard scalars)")
    return "\n".join(lines)


def plot(result: DiffResult) -> bytes | None:
    """Per step, each stage's largest |A - B| (log scale; 0, bit-identical, drawn at the floor). None
    without matplotlib (the sweep extra installs it)."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    floor = 1e-12
    figure, axes = plt.subplots(figsize=(8, 4.5), dpi=100)
    for stage in STAGES:
        series = [(i, step[stage]) for i, step in enumerate(result.per_step) if stage in step]
        if series:
            xs, ys = zip(*series, strict=True)
            axes.plot(xs, [min(max(y, floor), 1e12) for y in ys], marker="o", markersize=3, label=stage)
    if (first := result.first) is not None:
        axes.axvline(first.step, color="grey", linestyle=":",
                     label=f"first: step {first.step}, {first.stage} {first.name}")
    axes.set(yscale="log", xlabel="step", ylabel="max |A - B|  (0 drawn at 1e-12)",
             title="where the two runs part, stage by stage")
    axes.legend(fontsize=7, loc="upper left")
    figure.tight_layout()
    png = io.BytesIO()
    figure.savefig(png, format="png")
    plt.close(figure)
    return png.getvalue()


def write(result: DiffResult, folder: Path) -> None:
    """report.txt, diff.json, divergence.png and TensorBoard scalars (``diff/<stage>`` by step) into ``folder``."""
    from torch.utils.tensorboard import SummaryWriter

    write_atomic(folder / "report.txt", (report(result) + "\n").encode())
    write_atomic(folder / "diff.json", json.dumps(result.to_dict(), indent=1).encode())
    png = plot(result)
    if png is None:
        print("note: no divergence.png: matplotlib is not installed (pip install 'toyloops[sweep]')", file=sys.stderr)
    else:
        write_atomic(folder / "divergence.png", png)
    with SummaryWriter(str(folder)) as writer:
        for step, largest in enumerate(result.per_step):
            for stage, value in largest.items():
                if math.isfinite(value):
                    writer.add_scalar(f"diff/{stage}", value, step)


def run(argv: list[str] | None = None) -> DiffResult | None:
    """``toyloops diff ...``: diff, print, write the results' folder; exits 3 when the runs part."""
    options = parse(list(sys.argv[1:] if argv is None else argv))
    if options is None:
        print(__doc__.strip())
        return None
    name = options.pop("name") or runs.run_name([options["a"][1]])  # A's first config: ["--config", C, ...]
    folder = runs.claim_new_run(Path(LOG_DIR) / "diff" / name, "diff_")  # fails now if logs/ is not writable
    try:
        result = diff(**options)
        write(result, folder.path)
    except BaseException:
        folder.release(failed=True)
        raise
    folder.release(failed=False)
    print(report(result, folder.path), flush=True)
    if result.parted:
        raise SystemExit(PARTED)
    return result


def main(args: list[str] | None = None) -> None:
    runs.main(run, args)


if __name__ == "__main__":
    main()

"""toyloops seeds --config blobs_mlp --n 10 [--vs configs/other.yaml] [--kfold 5] [--engine solo] [--key value ...]

One config trained over N seeds (``seed_everything`` 0 .. N-1: data, split, shuffles and init) or the
K folds of ``--kfold K`` (with ``--n N``: the K folds of each of N seeds), in this process; each run's
best score of the config's objective, their mean ± std and 95% interval (Student t). ``--vs`` runs a
second config of the same objective, data and splits on the same seeds (or folds) and compares them
pairwise (paired t-test). Folds share their training data: a k-fold interval is a summary, not a
guarantee. Runs log to
``logs/seeds/<name>/<config>/<seed_N|fold_K|fold_K_seed_N>/``, the table to ``results.csv`` there.

``--engine ensemble`` (the default) trains each config's N runs at once as one ensemble
(:mod:`~toyloops.tools.ensemble`), each run what its hand-loop run would be; a config that does not
stack falls back to one run at a time in the hand loop, saying why. ``solo`` (the hand loop), ``loop`` and
``lightning`` run one at a time.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from toyloops.engine import runs
from toyloops.engine.defaults import LOG_DIR
from toyloops.engine.runs import flat, write_table
from toyloops.rules.errors import ConfigError, NonFiniteLossError
from toyloops.tools.stats import paired_t_test, summarize
from toyloops.tools.sweep import ENGINES, CommandParser, Objective, check_args, fit_run, objective, run_args

OWNED_KEYS = ("seed_everything", "trainer.default_root_dir", "data.init_args.fold", "data.init_args.num_folds")
LOADING = ("batch_size", "eval_batch_size", "drop_last")  # data settings that leave the data and splits alone
SOLO = "loop"  # the engine --engine solo and the ensemble's fallback run: the hand loop, which each member equals


def parse(args: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = CommandParser("toyloops seeds", "One config over N seeds (or K folds); any --key value goes to every run.",
                           "folder logs/seeds/<name>", engines=("ensemble", "solo", *ENGINES), required=True)
    parser.add_argument("--vs", default=None, help="a second config, compared on the same seeds/folds")
    parser.add_argument("--n", type=int, default=None, help="number of seeds (default 10)")
    parser.add_argument("--first_seed", type=int, default=0)
    parser.add_argument("--kfold", type=int, default=None,
                        help="K folds of the train+val data (of the config's seed; with --n, of each of N seeds)")
    opts, extra = parser.parse_command(args, lambda key: key in OWNED_KEYS, "run")
    opts.repeats = opts.n  # --kfold K --n N: the K folds of each of N seeds (repeated k-fold)
    if opts.kfold is not None and opts.kfold < 2:
        raise ConfigError(f"--kfold={opts.kfold}: expected an int >= 2")
    opts.n = 10 if opts.n is None else opts.n
    if opts.kfold is None and opts.n < 2:
        raise ConfigError(f"--n={opts.n}: a confidence interval needs at least 2 seeds")
    if not (opts.first_seed >= 0 and opts.first_seed + opts.n <= 2**32):
        raise ConfigError(f"--first_seed={opts.first_seed}: seeds must lie in [0, 2**32)")
    label = runs.run_name(opts.config)
    opts.name = runs.check_folder_name(opts.name or (f"{label}-vs-{runs.run_name([opts.vs])}" if opts.vs else label))
    return opts, extra


def run(args: list[str] | None = None) -> dict[str, Any]:
    opts, extra = parse(list(sys.argv[1:] if args is None else args))
    folder = Path(LOG_DIR) / "seeds" / opts.name
    runs.check_writable(folder)
    seeds = [(f"seed_{s}", ["--seed_everything", str(s)]) for s in range(opts.first_seed, opts.first_seed + opts.n)]
    folds = [(f"fold_{k}", ["--data.init_args.num_folds", str(opts.kfold), "--data.init_args.fold", str(k)])
             for k in range(opts.kfold or 0)]
    units = seeds if not folds else folds if opts.repeats is None else [
        (f"{fold}_{seed}", [*seed_args, *fold_args]) for seed, seed_args in seeds for fold, fold_args in folds]
    arms = {runs.run_name(opts.config): opts.config}
    if opts.vs:
        vs = runs.run_name([opts.vs])
        arms[f"vs {vs}" if vs in arms else vs] = [opts.vs]
    args_of = {arm: run_args(configs, extra) for arm, configs in arms.items()}
    engine = SOLO if opts.engine in ("solo", "ensemble") else opts.engine
    # One ensemble: its first member's parse checks the config (a second parse would cost a run's share).
    goal = None if opts.engine == "ensemble" and not opts.vs else comparable(
        opts, {arm: check_args(engine, [*args, *units[0][1]]) for arm, args in args_of.items()})
    scores: dict[str, list[float]] = {arm: [] for arm in arms}
    unit_args = {arm: {unit: [*args_of[arm], *given, "--trainer.default_root_dir",
                              str(folder / arm.replace(" ", "_") / unit)] for unit, given in units} for arm in arms}
    for arm in arms:
        if opts.engine == "ensemble" and (found := ensemble_scores(arm, unit_args[arm], goal)) is not None:
            scores[arm], goal = found
            continue
        goal = goal or comparable(opts, {arm: check_args(engine, [*args_of[arm], *units[0][1]])})
        for unit, args in unit_args[arm].items():
            scores[arm].append(best := fit_run(engine, args, monitor=goal.name).best)
            print(f"seeds: {arm} {unit}: best {goal} {best:.4f}", flush=True)
    return report(folder, [u for u, _ in units], scores, goal)


def ensemble_scores(arm: str, unit_args: dict[str, list[str]],
                    goal: Objective | None) -> tuple[list[float], Objective] | None:
    """The units' best scores (and the objective, if not given), trained as one ensemble; None (after one
    line saying why) if they do not stack."""
    from toyloops.tools import ensemble

    try:
        members = ensemble.fit_members(unit_args)
    except ensemble.NotStackable as why:
        print(f"seeds: one run at a time ({SOLO} engine): {why}", flush=True)
        return None
    scores, goal = [], goal or objective(members[0].cfg)
    for m in members:
        if m.failed:  # as the solo run would: the command ends with the run's own error
            raise NonFiniteLossError(f"{arm} {m.label}: {m.failed}")
        if m.best is None:
            raise ConfigError(f"{m.folder}: the run logged no {goal.name} (check trainer.limit_val_batches)")
        scores.append(m.best)
        print(f"seeds: {arm} {m.label}: best {goal} {m.best:.4f} (ensemble of {len(members)})", flush=True)
    return scores, goal


def comparable(opts: argparse.Namespace, configs: dict[str, Any]) -> Objective:
    """The arms' one objective; a ``--vs`` config of another objective, data or split is one line."""
    (arm, config), *other = configs.items()
    goal = objective(config)
    for vs, vs_config in other:
        data = [{k: v for k, v in flat({"seed_everything": c.get("seed_everything"), "data": c.get("data")}).items()
                 if k.rpartition(".")[2] not in LOADING} for c in (config, vs_config)]
        key = next((k for k in sorted(data[0].keys() | data[1].keys()) if data[0].get(k) != data[1].get(k)), None)
        why = f"{vs} ranks by {objective(vs_config)}, {arm} by {goal}" if objective(vs_config) != goal else key and (
            f"other data ({key}: {data[0].get(key)!r} vs {data[1].get(key)!r}); a paired test needs the same data "
            "and splits (a --key value given to seeds applies to both)")
        if why:
            raise ConfigError(f"--vs {opts.vs}: not comparable with {runs.run_name(opts.config)}: {why}")
    return goal


def report(folder: Path, units: list[str], scores: dict[str, list[float]], goal: Objective) -> dict[str, Any]:
    arms, pair = list(scores), len(scores) == 2
    write_table(folder / "results.csv", [["run", *arms, *(["difference"] if pair else [])], *(
        [unit, *(f"{scores[arm][i]:.6f}" for arm in arms),
         *([f"{scores[arms[0]][i] - scores[arms[1]][i]:.6f}"] if pair else [])] for i, unit in enumerate(units))])
    kind = f"{units[0].split('_')[0]}s" if units[0].count("_") == 1 else "fold x seed runs"  # seeds or folds
    lines = [f"\n== toyloops seeds: best {goal} over {len(units)} {kind} =="]
    out: dict[str, Any] = {"scores": scores}
    for arm in arms:
        s = out[arm] = summarize(scores[arm])
        lines.append(f"{arm}: {s.mean:.4f} ± {s.std:.4f} (95% CI {s.low:.4f} .. {s.high:.4f})")
    if pair:
        diff, p = out["difference"], out["p"] = paired_t_test(scores[arms[0]], scores[arms[1]])
        lines.append(f"{arms[0]} - {arms[1]}: {diff.mean:+.4f} (95% CI {diff.low:+.4f} .. {diff.high:+.4f}), "
                     f"paired t-test p = {p:.4g}")
    lines.append(f"table: {folder / 'results.csv'}")
    print("\n".join(lines), flush=True)
    return out


def main(args: list[str] | None = None) -> None:
    runs.main(run, args)

"""What a sweep writes at its end, in its folder: results.csv (every trial), best.yaml (the best trial's
config, made to run as a run of its own) or, with several objectives, the Pareto front (printed, marked in
results.csv, one config each in pareto/), Optuna's plots, and the printed summary."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from toyloops.engine.checkpoints import write_atomic
from toyloops.engine.defaults import LOG_DIR
from toyloops.engine.loggers import writes_run_folder
from toyloops.engine.runs import write_table
from toyloops.tools.study import PARAMS, Objective, plots

# The trainer keys the sweep sets for every trial (its QUIET and the trial's folder): defaults again in best.yaml.
TRIAL_KEYS = ("default_root_dir", "enable_progress_bar", "enable_model_summary")


def best_config(text: str) -> str:
    """A trial's resolved config, made to run as a new run of its own (not in the trial's folder)."""
    config = yaml.safe_load(text)
    trainer = config.get("trainer") or {}
    for key in TRIAL_KEYS:
        trainer.pop(key, None)
    logger = trainer.get("logger")
    if isinstance(logger, dict) and isinstance(logger.get("init_args"), dict) and writes_run_folder(logger):
        logger["init_args"].update(save_dir=LOG_DIR, name=None, version=None)  # MLflow's or W&B's are left as set
    config.pop("ckpt_path", None)
    return yaml.safe_dump(config, sort_keys=False)


def log_pruned_hparams(run_root: Path, engine: str, scores: list[float], goal: Objective) -> None:
    """A pruned run ends before its fit_end: register it in the HParams tab here, with its best so far."""
    from toyloops.engine.dashboard import log_hparams

    for config in run_root.glob("logs/*/*version_*/config.yaml"):
        log_hparams(config.parent, engine, config.read_text(),
                    {f"{goal.name}_best": (max if goal.mode == "max" else min)(scores, default=math.nan),
                     "val/loss_final": math.nan}, max(len(scores) - 1, 0))


def shown(values: list[float], goals: list[Objective]) -> str:
    return "  ".join(f"{v:.0f}" if goal.name == PARAMS else f"{v:.4f}" for v, goal in zip(values, goals, strict=True))


def report(study: optuna.Study, folder: Path, space: dict[str, BaseDistribution],
           goals: Objective | list[Objective]) -> dict[str, Any]:
    """results.csv, best.yaml (or pareto/), the plots in ``folder``; the printed summary."""
    goals = [goals] if isinstance(goals, Objective) else goals
    trials = study.get_trials(deepcopy=False)
    front = {t.number for t in study.best_trials} if len(goals) > 1 else set()
    write_table(folder / "results.csv", [
        ["number", "state", *(goal.name for goal in goals), *(["pareto"] if front else []), *space, "epochs_reported",
         "duration_s", "retry_of", "worker"],
        *([t.number, t.state.name, *([f"{v:.6f}" for v in t.values] if t.values else [""] * len(goals)),
           *([int(t.number in front)] if front else []), *(t.params.get(k, "") for k in space),
           len(t.intermediate_values), f"{t.duration.total_seconds():.2f}" if t.duration else "",
           t.system_attrs.get("failed_trial", ""), t.user_attrs.get("worker", "")] for t in trials)])
    counts = {state.name.lower(): sum(t.state == state for t in trials) for state in TrialState}
    out: dict[str, Any] = {"counts": counts, "folder": folder}
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    lines = [f"\n== toyloops sweep {study.study_name} ==",
             "trials: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n)]
    if complete and len(goals) > 1:
        lines += pareto(study.best_trials, folder, goals)
        out["pareto"] = sorted(front)
        out["plots"] = plots(study, folder, goals)
    elif complete:
        goal, best = goals[0], study.best_trial
        out.update(best=best.value, best_number=best.number, best_params=best.params)
        header = (f"# Best trial {best.number} of sweep {study.study_name!r}: best {goal} {best.value:.4f}\n"
                  f"# params: {json.dumps(best.params)}\n# train it: toyloops fit --config best.yaml\n")
        write_atomic(folder / "best.yaml", (header + best_config(best.user_attrs["config"])).encode())
        lines += [f"best: trial {best.number}, {goal} {best.value:.4f}, {json.dumps(best.params)}",
                  f"best config: {folder / 'best.yaml'}  (toyloops fit --config {folder / 'best.yaml'})"]
        top = sorted(complete, key=lambda t: t.value, reverse=goal.mode == "max")[:5]
        lines += ["top trials:"] + [f"  {t.number:4d}  {t.value:.4f}  {json.dumps(t.params)}" for t in top]
        out["plots"] = plots(study, folder)
    lines += [f"results: {folder / 'results.csv'}",
              f"view: tensorboard --logdir {folder / 'trials'}   (HParams tab compares the trials)"]
    print("\n".join(lines), flush=True)
    return out


def pareto(front: list[FrozenTrial], folder: Path, goals: list[Objective]) -> list[str]:
    """The Pareto front's lines, and each front trial's config as ``pareto/NNNN.yaml`` (a run of its own)."""
    (folder / "pareto").mkdir(exist_ok=True)
    lines = [f"pareto front ({', '.join(map(str, goals))}): {len(front)} trial(s), none better in every objective",
             f"  {'trial':>5}  {'  '.join(goal.name for goal in goals)}  hyperparameters"]
    for trial in sorted(front, key=lambda t: t.values[0], reverse=goals[0].mode == "max"):
        header = (f"# Trial {trial.number} on the Pareto front of {', '.join(map(str, goals))}: "
                  f"{shown(trial.values, goals)}\n# params: {json.dumps(trial.params)}\n")
        write_atomic(folder / "pareto" / f"{trial.number:04d}.yaml",
                     (header + best_config(trial.user_attrs["config"])).encode())
        lines.append(f"  {trial.number:5d}  {shown(trial.values, goals)}  {json.dumps(trial.params)}")
    lines.append(f"front configs: {folder / 'pareto'}/NNNN.yaml  (toyloops fit --config {folder / 'pareto'}/NNNN.yaml)")
    return lines

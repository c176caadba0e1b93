"""``toyloops sweep ... --population K``: trials asked from Optuna K at a time (``study.ask`` x K) and
trained as one ensemble (:mod:`~toyloops.tools.ensemble`), each told its own result (``study.tell``);
the study's pruner judges each member at each epoch, and a pruned member leaves the ensemble.

Only a space of per-member hyperparameters (:data:`PER_MEMBER`: learning rate, weight decay, momentum,
label smoothing, class weights, dropout) trains as a population; another space (architecture, batch
size) sweeps one trial at a time, as does a config that does not stack, each saying why in one line.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import TrialState

from toyloops.rules.errors import ToyloopsError
from toyloops.tools import ensemble
from toyloops.tools.space import as_args, suggest
from toyloops.tools.stacked import STACKABLE
from toyloops.tools.study import Objective

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
PER_MEMBER = re.compile(r"^model\.(init_args\.)?(optimizer\.(init_args\.)?(lr|weight_decay|momentum)"
                        r"|(init_args\.)?(label_smoothing|class_weights)|net\.(init_args\.)?dropout)$")


def why_not_population(space: dict[str, BaseDistribution], config: Any) -> str | None:
    """None if the config's net stacks and every key of ``space`` varies per member, else why not."""
    net = str(config.get("model.init_args.net.class_path") or config.get("model.net.class_path") or "")
    if (name := net.rpartition(".")[2]) not in {cls.__name__ for cls in STACKABLE}:
        return f"{name or 'the net'} does not stack (the ensemble stacks {', '.join(c.__name__ for c in STACKABLE)})"
    key = next((key for key in space if not PER_MEMBER.match(key)), None)
    return key and f"{key} is not a per-member hyperparameter (those: lr, weight_decay, momentum, " \
                   "label_smoothing, class_weights, dropout)"


class Population:
    """Runs a study's trials K at a time as ensembles, in this process, until it has ``trials`` finished."""

    def __init__(self, opts: Any, folder: Path, space: dict[str, BaseDistribution], base_args: list[str],
                 goal: Objective, worker: str) -> None:
        self.opts, self.folder, self.space, self.base_args, self.goal, self.worker = (
            opts, folder, space, base_args, goal, worker)

    def run(self, study: optuna.Study) -> bool:
        """Train batches of trials; False (nothing asked of the study) if the config does not stack."""
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        while (finished := sum(t.state in FINISHED for t in study.get_trials(deepcopy=False))) < self.opts.trials:
            failed = [t for t in study.get_trials(deepcopy=False) if "error" in t.user_attrs]
            if len(failed) >= self.opts.trials:  # as the one-at-a-time worker says it
                raise ToyloopsError(f"{len(failed)} trials failed (the last: {failed[-1].user_attrs['error']}); "
                                    "narrow the space")
            trials = [study.ask() for _ in range(min(self.opts.population, self.opts.trials - finished))]
            try:
                self.train(study, trials)
            except ensemble.NotStackable as why:
                for trial in trials:  # asked, not run: waiting again for the one-at-a-time worker
                    study.tell(trial, state=TrialState.FAIL)
                    study.enqueue_trial(trial.params, skip_if_exists=False)
                print(f"sweep: one trial at a time: {why}", flush=True)
                return False
        return True

    def train(self, study: optuna.Study, trials: list[optuna.Trial]) -> None:
        runs_args, params = {}, {}
        for trial in trials:
            trial.set_user_attr("worker", self.worker)
            params[trial.number] = {key: suggest(trial, key, dist) for key, dist in self.space.items()}
            run_root = self.folder / "trials" / f"{trial.number:04d}"
            runs_args[str(trial.number)] = [*self.base_args, *as_args(params[trial.number]),
                                            "--trainer.default_root_dir", str(run_root)]
            print(f"sweep: trial {trial.number} {json.dumps(params[trial.number])}", flush=True)
        by_label = {str(t.number): t for t in trials}
        seen: dict[str, list[float]] = {label: [] for label in by_label}
        pruned: set[str] = set()

        def epoch_end(member: ensemble.Member, epoch: int, score: float | None) -> bool:
            if score is None:
                return False
            seen[member.label].append(score)
            trial = by_label[member.label]
            trial.report(score, step=epoch)
            if trial.should_prune():
                pruned.add(member.label)
                return True
            return False

        members = ensemble.fit_members(runs_args, epoch_end)
        print(f"sweep: trials {trials[0].number}..{trials[-1].number} trained as one ensemble", flush=True)
        for m in members:
            trial = by_label[m.label]
            if m.failed:
                trial.set_user_attr("error", m.failed)
                print(f"sweep: trial {trial.number} failed ({m.folder}): {m.failed}", file=sys.stderr, flush=True)
                study.tell(trial, state=TrialState.FAIL)
                continue
            trial.set_user_attr("config", (m.folder / "config.yaml").read_text())
            trial.set_user_attr("run_dir", str(m.folder))
            if m.label in pruned:
                from toyloops.tools.sweep import log_pruned_hparams

                log_pruned_hparams(self.folder / "trials" / f"{trial.number:04d}", "loop", seen[m.label], self.goal)
                study.tell(trial, state=TrialState.PRUNED)
            elif m.best is None:
                raise ToyloopsError(f"{m.folder}: the run logged no {self.goal.name} (check trainer.limit_val_batches)")
            else:
                study.tell(trial, m.best)


def run(opts: Any, folder: Path, space: dict[str, BaseDistribution], base_args: list[str], goal: Objective,
        config: Any, study: optuna.Study, worker: str) -> bool:
    """The sweep's trials K at a time (``opts.population``), each batch one ensemble; False (after one line
    saying why, unless K is 1) where they cannot train so: the sweep then runs them one at a time."""
    if opts.population == 1:
        return False
    why = why_not_population(space, config)
    if why:
        print(f"sweep: one trial at a time: {why}", flush=True)
        return False
    return Population(opts, folder, space, base_args, goal, worker).run(study)

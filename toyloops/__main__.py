"""toyloops fit --config blobs_mlp   (``python -m toyloops`` is the same command)

The command of an installed toyloops:

    toyloops fit|validate|test|predict ...   the LightningCLI (what train.py runs)
    toyloops loop fit|validate|test ...      the hand-written loop
    toyloops compare --config C ...          both engines, one table
    toyloops diff --config C --b.KEY V ...   where two trainings part: first step, stage and tensor
    toyloops profile --config C [--engine both] [--batch-sizes 1,8,64,512]   where a step's time and memory go
    toyloops scratch                         the NumPy rung and its gradient check
    toyloops configs                         the shipped configs and their documented accuracy
    toyloops export --ckpt_path P [--format onnx|torchscript]   a trained net beside its checkpoint
    toyloops init DIR                        a new project of your own, built on toyloops
    toyloops sweep --config C --space S      an Optuna search (--trials N --workers K --storage URL)
    toyloops seeds --config C --n 10 [--vs D] [--kfold K]   one config over seeds or folds: mean, CI, paired test
    toyloops tour [--output tour.ipynb]      the notebook tour (docs/tour.py of a clone), executed
    toyloops doctor --config C [--engine lightning|hand]    the training recipe's checks: pass / warn / fail

``--config`` takes a path or the name of a shipped config (``blobs_mlp``, ``presets/debug``).
"""

from __future__ import annotations

import importlib
import re
import sys

from toyloops import __version__
from toyloops.engine.entry import shipped_configs, stop_quietly_until_started, with_shipped_configs
from toyloops.rules.errors import ConfigError

COMMANDS = ("fit", "validate", "test", "predict", "loop", "compare", "diff", "doctor", "profile", "scratch", "configs",
            "export", "init", "sweep", "seeds", "tour")


def list_configs() -> None:
    """Each shipped config with the best score (val/acc, or val/loss) its header documents."""
    for name, path in shipped_configs().items():
        documented = re.search(r"best (val/\w+ [0-9.]+)", path.read_text())
        print(f"{name:<34} {'best ' + documented[1] if documented else '(a preset: stack it on a run config)'}")


def main(args: list[str] | None = None) -> None:
    from_command_line = args is None
    args = list(sys.argv[1:] if from_command_line else args)
    command = args[0] if args else ""
    stop_quietly_until_started()  # a Ctrl-C while torch imports: one line, not an import's traceback
    try:  # a config name that names nothing: said now, not after seconds of importing torch
        with_shipped_configs(args[1:], note=False)  # the command resolves them again, and notes
    except ConfigError as err:
        sys.exit(f"error: {err}")
    if command in ("scratch", "configs") and args[1:]:
        if args[1:] in (["-h"], ["--help"]):
            print(f"toyloops {command}: takes no arguments")
            return
        sys.exit(f"error: toyloops {command} takes no arguments, got {' '.join(args[1:])!r}")
    if command in ("fit", "validate", "test", "predict"):
        from toyloops.engine.cli import main as lightning

        lightning(None if from_command_line else args)  # None: LightningCLI reads sys.argv itself
    elif command == "loop":
        from toyloops.engine.loop_cli import main as hand_loop
        from toyloops.engine.runs import freeze_imports

        if from_command_line:  # as the LightningCLI commands are (runs.main, given no args)
            freeze_imports()
        hand_loop(args[1:])
    elif command == "scratch":
        from toyloops.tools.scratch import main as scratch

        scratch()
    elif command == "configs":
        list_configs()
    elif command in ("compare", "diff", "doctor", "profile", "init", "export", "sweep", "seeds", "tour"):
        # toyloops.tools.<command>.main
        extra = {"sweep": "sweep", "seeds": "sweep", "tour": "tour"}.get(command)
        try:
            tool = importlib.import_module(f"toyloops.tools.{command}")
        except ImportError as err:
            if extra is None:
                raise
            sys.exit(f"error: toyloops {command} needs {err.name}: pip install 'toyloops[{extra}]'")
        tool.main(args[1:])
    elif command in ("-V", "--version"):
        print(f"toyloops {__version__}")
    else:
        print(__doc__.strip())
        sys.exit(0 if command in ("-h", "--help") else f"error: the first argument must be one of {', '.join(COMMANDS)}"
                 + (f", got {command!r}" if command else ""))


if __name__ == "__main__":
    main()

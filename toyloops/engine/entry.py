"""What every command does before it imports torch and Lightning (seconds): shipped configs by
name, and a quiet stop on Ctrl-C or SIGTERM. Nothing here imports more than the standard library.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

CONFIG_FLAGS = ("--config", "-c")


def shipped_configs() -> dict[str, Path]:
    """The configs that ship inside the package, by name: ``blobs_mlp``, ``presets/debug``, ..."""
    folder = Path(__file__).parents[1] / "configs"
    return {path.relative_to(folder).with_suffix("").as_posix(): path for path in sorted(folder.rglob("*.yaml"))}


def shipped_name(value: str, shipped: dict[str, Path]) -> str | None:
    """The shipped config ``value`` names (``blobs_mlp``, ``blobs_mlp.yaml``, ``configs/blobs_mlp.yaml``:
    the README's repository form), or None."""
    name = value.removeprefix("toyloops/").removeprefix("configs/").removesuffix(".yaml").removesuffix(".yml")
    return name if name in shipped else None


def with_shipped_configs(args: list[str], note: bool = True) -> list[str]:
    """``--config blobs_mlp`` (or ``-c``, ``--config=``): a value that is no file means the shipped
    config of that name; neither a file nor a name nor inline YAML is a one-line error."""
    shipped, out = shipped_configs(), []
    for i, arg in enumerate(args):
        flag, equals, value = arg.partition("=") if arg.startswith(tuple(f"{f}=" for f in CONFIG_FLAGS)) \
            else ("", "", arg)
        if not (equals or (i and args[i - 1] in CONFIG_FLAGS)) or Path(value).is_file():
            out.append(arg)
            continue
        name = shipped_name(value, shipped)
        if name is None and not any(c in value for c in ":{\n"):  # not inline YAML either
            from toyloops.rules.errors import ConfigError

            runs = [name for name in shipped if "/" not in name]
            raise ConfigError(f"--config {value!r} is neither a file nor a shipped config; shipped: {', '.join(runs)}, "
                              "and more (toyloops configs lists them all)")
        if note and name is not None and Path(f"{value}.yaml").is_file():
            print(f"note: --config {value} is the shipped config; give {value}.yaml for the file here",
                  file=sys.stderr)
        out.append(f"{flag}{equals}{shipped[name]}" if name is not None else arg)
    return out


def stop_quietly_until_started() -> None:
    """Until a command's own handlers take over (:func:`toyloops.engine.runs.main`), Ctrl-C or SIGTERM ends
    it in one line with the shell's code (130, 143), not a traceback from inside an import."""
    def stop(signum: int, frame: object) -> None:
        sys.stderr.write(f"stopped by {signal.Signals(signum).name} while starting: nothing was written\n")
        raise SystemExit(128 + signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)

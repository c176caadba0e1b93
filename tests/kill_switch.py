"""python tests/kill_switch.py N between|inside|TERM|INT|fill lightning|loop|SCRIPT.py ARGS...

Runs ``train.py`` (lightning), ``toyloops.engine.loop_cli`` (loop) or a script with ARGS and kills itself with a
real SIGKILL at a chosen checkpoint write, so the kill tests place their kill by counting
``torch.save`` calls instead of sleeping:

- ``between``: at the start of write N + 1, so write N is complete and the run has trained on
  past it (the steps since then are lost and must be redone by a resume);
- ``inside``: inside write N, with half its bytes on disk and the rename not yet done;
- ``after``: right after write N's rename, so its checkpoint is in place and nothing after it ran;
- ``TERM`` / ``INT``: sends itself that signal as write N + 1 starts, and lets the run go on;
- ``fill``: before write N, fills the filesystem of ``$BALLAST`` (a file path) to the last byte;
- ``rank1-KILL`` / ``rank1-STOP``: DDP rank 1 sends itself that signal at training step N.
"""

import os
import runpy
import signal
import sys

import torch

n, mode, engine, *args = sys.argv[1:]
n, calls, real_save = int(n), 0, torch.save


def save(obj, f, *rest, **kwargs):  # noqa: ANN001, ANN002, ANN003 - torch.save's signature
    global calls, armed
    calls += 1
    if mode == "between" and calls == n + 1:
        os.kill(os.getpid(), signal.SIGKILL)
    if mode in ("TERM", "INT") and calls == n + 1:
        os.kill(os.getpid(), getattr(signal, f"SIG{mode}"))
    if mode == "fill" and calls == n:
        fd = os.open(os.environ["BALLAST"], os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        for block in (65536, 1):  # big blocks, then the last bytes
            try:
                while True:
                    os.write(fd, b"\0" * block)
            except OSError:  # ENOSPC: the filesystem is full
                pass
        os.close(fd)
    if mode == "inside" and calls == n:
        armed = True  # the file write that follows this serialisation dies halfway
    return real_save(obj, f, *rest, **kwargs)


def fsync(fd: int) -> None:
    if armed:
        os.ftruncate(fd, os.fstat(fd).st_size // 2)  # half the file on disk ...
        real_fsync(fd)
        os.kill(os.getpid(), signal.SIGKILL)  # ... and no rename
    real_fsync(fd)


def replace(src, dst, *rest, **kwargs):  # noqa: ANN001, ANN002, ANN003 - os.replace's signature
    real_replace(src, dst, *rest, **kwargs)
    if mode == "after" and calls == n:  # the rename that puts checkpoint write N in place
        os.kill(os.getpid(), signal.SIGKILL)


torch.save, os.fsync, armed, real_fsync = save, fsync, False, os.fsync
os.replace, real_replace = replace, os.replace
if mode.startswith("rank1-") and os.environ.get("LOCAL_RANK") == "1":
    import toyloops.rules.errors  # patched before the engines import it

    real_check = toyloops.rules.errors.check_finite

    def check_finite(loss, step, epoch):  # noqa: ANN001, ANN202 - called once a training step
        if step == n:
            os.kill(os.getpid(), getattr(signal, f"SIG{mode.split('-')[1]}"))
        return real_check(loss, step, epoch)

    toyloops.rules.errors.check_finite = check_finite
# DDP starts its other ranks by running sys.argv again: this same script with the same arguments
sys.argv = [os.path.abspath(__file__), *sys.argv[1:]] if engine in ("lightning", "loop") else [engine, *args]
if engine == "lightning":
    from toyloops.engine.cli import main

    main(args)
elif engine == "loop":
    from toyloops.engine.loop_cli import main

    main(args)
else:
    runpy.run_path(engine, run_name="__main__")

"""toyloops as another project meets it: the wheel, built from this tree, installed non-editable in
a fresh virtual environment, and used from a folder outside the repository: the `toyloops`
command, shipped configs by name, the library in a project's own code, init, export."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from conftest import ROOT

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A fresh venv holding CPU torch, then the wheel with its export extra (pinned as CI pins)."""
    build = tmp_path_factory.mktemp("wheel")
    env_dir = tmp_path_factory.mktemp("venv")
    venv.create(env_dir, with_pip=True)
    bin_dir = env_dir / "bin"
    python = str(bin_dir / "python")
    run = dict(capture_output=True, text=True, timeout=900)
    # Outside this tree: nothing of the source checkout may leak onto the new interpreter's path.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    wheel = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                            str(build), str(ROOT)], **run)
    assert wheel.returncode == 0, wheel.stderr[-2000:]
    (whl,) = build.glob("toyloops-*.whl")
    for step in (["torch==2.13.0"], ["-c", str(ROOT / "constraints.txt"), f"toyloops[export] @ {whl.as_uri()}"]):
        done = subprocess.run([python, "-m", "pip", "install", "-q", *step], env=env, **run)
        assert done.returncode == 0, done.stderr[-2000:]
    return bin_dir, env


def sh(bin_dir: Path, env: dict[str, str], cwd: Path, *command: str) -> subprocess.CompletedProcess:
    name, *args = command
    exe = str(bin_dir / name) if (bin_dir / name).exists() else name  # the venv's own, else the system's
    done = subprocess.run([exe, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    said = f"{done.stdout[-2000:]}{done.stderr[-3000:]}"
    assert done.returncode == 0, f"{' '.join(command)} exited {done.returncode}:\n{said}"
    return done


def test_another_project_uses_the_installed_wheel(installed, tmp_path):
    bin_dir, env = installed
    work = tmp_path / "elsewhere"
    work.mkdir()
    assert not work.resolve().is_relative_to(ROOT)

    # Train from a shipped config by name; logs/ goes where the command runs.
    fit = sh(bin_dir, env, work, "toyloops", "fit", "--config", "blobs_mlp", "--trainer.max_epochs", "4",
             "--trainer.enable_progress_bar=false")
    ckpt = work / "logs/blobs_mlp/version_0/checkpoints/last.ckpt"
    assert ckpt.is_file() and float(fit.stdout.split("best val/acc: ")[1].split()[0]) > 0.9, fit.stdout[-1500:]
    assert "args parameter" not in fit.stderr  # the command hands LightningCLI its own arguments only

    # The library in the project's own code (its own LightningModule, token data, plain Trainers).
    script = work / "foreign_project.py"
    script.write_text((ROOT / "tests/foreign_project.py").read_text())
    used = sh(bin_dir, env, work, "python", str(script), str(ckpt))
    assert used.stdout.strip().splitlines()[-1] == "foreign project: ok", used.stdout[-2000:]

    # Export next to the checkpoint; onnxruntime gives torch's logits.
    sh(bin_dir, env, work, "toyloops", "export", "--ckpt_path", str(ckpt), "--format", "onnx")
    check = (
        "import sys, numpy as np, onnxruntime as ort, torch\n"
        "from toyloops import Classifier\n"
        "model = Classifier.load_from_checkpoint(sys.argv[1]).eval()\n"
        "x = torch.randn(37, 2)\n"
        "session = ort.InferenceSession(sys.argv[2])\n"
        "out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]\n"
        "np.testing.assert_allclose(out, model(x).detach().numpy(), atol=1e-5)\n"
        "print('onnx equal')\n"
    )
    exported = sh(bin_dir, env, work, "python", "-c", check, str(ckpt), str(ckpt.with_suffix(".onnx")))
    assert "onnx equal" in exported.stdout

    # A new project from the template: the two commands its README gives (train; test) both work.
    sh(bin_dir, env, work, "toyloops", "init", "demo")
    demo = work / "demo"
    assert "class_path: demo.models.TinyNet" in (demo / "demo.yaml").read_text()  # its own net, by config
    readme = (demo / "README.md").read_text().split("```bash", 1)[1].split("```", 1)[0]
    train, test = [line for line in readme.strip().splitlines() if line.strip()]
    trained = sh(bin_dir, env, demo, "bash", "-c", train + " --trainer.enable_progress_bar=false")
    assert float(trained.stdout.split("best val/acc: ")[1].split()[0]) > 0.9, trained.stdout[-1500:]
    tests = sh(bin_dir, env, demo, "bash", "-c", test)
    assert " passed" in tests.stdout and "failed" not in tests.stdout, tests.stdout[-1500:]

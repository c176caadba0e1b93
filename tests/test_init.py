"""toyloops init: a new project of its own that trains with one command and passes its own tests."""

import os
import subprocess
import sys

import pytest

from toyloops.errors import ConfigError
from toyloops.init import init, run


@pytest.mark.integration
def test_a_new_project_trains_and_its_tests_pass(tmp_path):
    root = run([str(tmp_path / "my-project")])
    assert (root / "my_project/models.py").exists() and (root / "config.yaml").exists()
    assert "class_path: my_project.models.TinyNet" in (root / "config.yaml").read_text()
    env = {**os.environ, "PYTHONPATH": str(root)}  # what `pip install -e .` of the project gives
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=root, env=env,
                           capture_output=True, text=True)
    assert tests.returncode == 0 and "1 passed" in tests.stdout, tests.stdout[-2000:] + tests.stderr[-2000:]
    trained = subprocess.run([sys.executable, "train.py", "fit", "--config", "config.yaml",
                              "--trainer.enable_progress_bar=false"], cwd=root, env=env, capture_output=True, text=True)
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert float(trained.stdout.split("best val/acc: ")[1].split()[0]) > 0.9  # XOR, which no linear model learns


def test_init_writes_only_into_a_new_or_empty_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="is not empty"):
        init(str(tmp_path))
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]

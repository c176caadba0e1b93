"""toyloops init: writes only into a new or empty folder, takes only names it can build, and writes a
project that owns its code (nothing in its package imports toyloops) and that toyloops' commands train:
``toyloops fit`` to a stated accuracy, ``toyloops seeds --kfold 2``, and its own tests with warnings as
errors. (The same project from the installed wheel, with ``pip install -e .``: tests/test_foreign.py.)"""

import ast
import csv
import os
import subprocess
import sys

import pytest
import torch
from packaging.utils import InvalidName, canonicalize_name

from toyloops.rules.errors import ConfigError
from toyloops.tools.init import init, main

# The config trains to 0.98 best val/acc (seed 0); a trained project must stay above this.
STATED_ACCURACY = 0.95
ENGINE_IMPORTS = {"toyloops.engine.cli", "toyloops.engine.entry"}  # what train.py and its test run


def test_init_writes_only_into_a_new_or_empty_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="is not empty"):
        init(str(tmp_path))
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize("name", ["toyloops", "torch", "json"])
def test_a_project_named_like_an_installed_module_is_refused(tmp_path, name):
    with pytest.raises(ConfigError, match=f"clash with the installed module {name!r}|package {name!r}"):
        init(str(tmp_path / name))
    assert not (tmp_path / name).exists()


@pytest.mark.parametrize(("name", "rule"), [
    ("my project", "distribution name"), ("café", "distribution name"), ("it's", "distribution name"),
    ('say"hi', "distribution name"), ("-dash", "distribution name"), ("class", "keyword"),
    ("Import", "keyword"), ("3d-points", "starts with a digit"), ("p" * 300, "too long"), ("p" * 251, "too long"),
])
def test_a_name_it_cannot_build_is_one_line_naming_the_rule(tmp_path, capsys, name, rule):
    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path / name)])
    message = str(exit_.value.code)  # what the process prints to stderr; a string exits with status 1
    assert message.startswith("error: ") and "\n" not in message and rule in message, message
    assert list(tmp_path.iterdir()) == []
    if rule == "distribution name":  # the rule is packaging's
        with pytest.raises(InvalidName):
            canonicalize_name(name, validate=True)


@pytest.mark.parametrize("name", ["a", "my-project", "My.Project_2", "p" * 250])
def test_names_packaging_accepts_make_a_project(tmp_path, name):
    canonicalize_name(name, validate=True)
    root = init(str(tmp_path / name))
    package = name.lower().replace("-", "_").replace(".", "_")
    assert (root / package / "models.py").is_file() and (root / f"{package}.yaml").is_file()
    assert f'name = "{name}"' in (root / "pyproject.toml").read_text()


def toyloops_imports(path):
    """The toyloops modules a file imports, anywhere in its code."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        found |= {name for name in names if name.split(".")[0] == "toyloops"}
    return found


def test_the_project_owns_its_code(tmp_path):
    root = init(str(tmp_path / "my-project"))
    for path in (root / "my_project").rglob("*.py"):
        assert toyloops_imports(path) == set(), path
    for path in (root / "train.py", root / "tests/test_project.py"):  # commands: toyloops' CLI only
        assert toyloops_imports(path) <= ENGINE_IMPORTS, path
    config = (root / "my_project.yaml").read_text()
    assert "class_path: my_project.models.XorClassifier" in config and "toyloops" not in config
    assert "class_path: my_project.models.TinyNet" in config and "class_path: my_project.data.XorDataModule" in config
    # short enough to read first: the net and module in one file, the data in another
    assert len((root / "my_project/models.py").read_text().splitlines()) <= 80
    assert len((root / "my_project/data.py").read_text().splitlines()) <= 70
    assert "logs/" in (root / ".gitignore").read_text().splitlines()
    assert 'dependencies = ["toyloops>=' in (root / "pyproject.toml").read_text()


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return init(str(tmp_path_factory.mktemp("init") / "demo"))


def toyloops_command(project, *args):
    """``python -m toyloops ...`` (the toyloops command) run from the project's folder, where its package imports."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, "-m", "toyloops", *args], cwd=project, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def test_toyloops_fit_trains_the_project_to_its_stated_accuracy(project):
    toyloops_command(project, "fit", "--config", "demo.yaml", "--trainer.enable_progress_bar=false")
    checkpoint = torch.load(project / "logs/demo/version_0/checkpoints/last.ckpt", weights_only=True)
    best = [state for key, state in checkpoint["callbacks"].items() if key.startswith("ModelCheckpoint")]
    assert [state["monitor"] for state in best] == ["val/acc"]
    assert best[0]["best_model_score"].item() > STATED_ACCURACY
    assert checkpoint["epoch"] == 19  # the config's 20 epochs
    tested = toyloops_command(project, "test", "--config", "demo.yaml", "--ckpt_path", "last")
    assert float(tested.stdout.split("test/acc: ")[1].split()[0]) > STATED_ACCURACY


def test_the_hand_trainer_drives_the_projects_own_module_to_lightnings_numbers(project):
    """The project's LightningModule is not toyloops': the hand trainer drives it through its hooks."""
    args = ("--config", "demo.yaml", "--trainer.max_epochs=3", "--trainer.enable_progress_bar=false",
            "--trainer.default_root_dir=engines")  # its own logs/, apart from the other tests' runs
    lightning = toyloops_command(project, "fit", *args).stdout
    hand = toyloops_command(project, "loop", "fit", *args).stdout
    best = [float(out.split("best val/acc: ")[1].split()[0]) for out in (lightning, hand)]
    assert best[0] == best[1] > 0.8


def test_toyloops_seeds_runs_its_folds(project):
    toyloops_command(project, "seeds", "--config", "demo.yaml", "--kfold", "2", "--name", "folds")
    with open(project / "logs/seeds/folds/results.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["run", "demo"] and [row[0] for row in rows[1:]] == ["fold_0", "fold_1"]
    assert all(STATED_ACCURACY < float(row[1]) <= 1 for row in rows[1:])


def test_the_projects_own_tests_pass_with_warnings_as_errors(project):
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-W", "error", "-p", "no:cacheprovider"],
                          cwd=project, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "3 passed" in done.stdout, done.stdout[-3000:]


def test_the_engine_drives_a_module_that_keeps_none_of_the_templates_names(tmp_path, monkeypatch):
    """Renamed ``net``, no ``num_classes``, data without ``splits``: a plain LightningModule and data
    module still train (toyloops' pictures of the net need those names; the scalars do not)."""
    from toyloops.engine.cli import ToyCLI

    root = init(str(tmp_path / "renamed"))
    models, data = root / "renamed/models.py", root / "renamed/data.py"
    models.write_text(models.read_text().replace("self.net", "self.body").replace(
        "self.num_classes = net.num_classes", ""))
    data.write_text(data.read_text().replace("self.splits", "self.parts"))
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.chdir(root)
    cli = ToyCLI(args=["fit", "--config", "renamed.yaml", "--trainer.max_epochs=3",
                       "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"])
    assert not hasattr(cli.model, "net") and cli.trainer.callback_metrics["val/acc"] > 0.5


@pytest.mark.parametrize(("args", "message"), [
    (["--data.init_args.fold=3"], "error: data.fold=3, data.num_folds=None: give both, 0 <= fold < num_folds"),
    (["--data.init_args.batch_size=0"], "error: data.batch_size=0, data.eval_batch_size=None: expected >= 1"),
])
def test_the_projects_own_refusals_are_one_line(project, monkeypatch, args, message):
    """Its classes raise ValueError (they import nothing from toyloops); the engine prints one line."""
    from toyloops.engine.cli import main as toyloops_fit

    monkeypatch.syspath_prepend(str(project))
    monkeypatch.chdir(project)
    with pytest.raises(SystemExit) as exit_:
        toyloops_fit(["fit", "--config", "demo.yaml", *args])
    assert str(exit_.value.code) == message

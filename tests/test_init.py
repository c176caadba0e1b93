"""toyloops init: writes only into a new or empty folder. (That the new project trains with its README's
command and passes its own tests is checked on the installed wheel, in tests/test_foreign.py.)"""

import pytest

from toyloops.rules.errors import ConfigError
from toyloops.tools.init import init


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


def test_the_new_project_names_its_config_after_itself_and_ignores_its_logs(tmp_path):
    root = init(str(tmp_path / "my-project"))
    assert "class_path: my_project.models.TinyNet" in (root / "my_project.yaml").read_text()
    assert "logs/" in (root / ".gitignore").read_text().splitlines()
    assert 'dependencies = ["toyloops>=' in (root / "pyproject.toml").read_text()

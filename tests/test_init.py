"""toyloops init: writes only into a new or empty folder. (That the new project trains with its README's
command and passes its own tests is checked on the installed wheel, in tests/test_foreign.py.)"""

import pytest

from toyloops.errors import ConfigError
from toyloops.init import init


def test_init_writes_only_into_a_new_or_empty_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="is not empty"):
        init(str(tmp_path))
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]

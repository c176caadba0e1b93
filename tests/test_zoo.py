"""Each bug of the zoo (toyloops.tools.zoo, switched on by a preset in configs/zoo/ stacked on blobs_mlp) is
caught by the doctor check its page names, with the number that check measured; the hook bugs in both
engines. Each page's command is the one run here."""

from __future__ import annotations

import re

import pytest
from conftest import CONFIGS, ROOT

from toyloops.tools.doctor import run

# bug -> (the check that catches it, a pattern its measured number matches)
CAUGHT = {
    "no_zero_grad": ("step gradient", r"max rel\. error (0\.[5-9]|1)"),
    "softmax_before_cross_entropy": ("overfit one batch", r"-> 0\.5[0-9]+"),
    "shuffled_labels": ("beats zeroed input", r"val loss 1\.\d+ vs 1\.\d+"),
    "validate_in_train_mode": ("eval mode", r"^2 layers in train mode"),
    "val_leak": ("splits disjoint", r"^300 shared samples"),
    "stats_from_all_splits": ("train-only statistics", r"train moved [1-9]"),
    "lr_100x": ("lr range", r"lr 1, blows up at 0\.\d+"),
    "scheduler_per_batch": ("lr schedule", r"^7 troughs"),
    "clip_before_unscale": ("step gradient", r"max rel\. error 1"),
    "loss_kept_alive": ("graph freed", r"^[1-9]\d{2,} nodes held"),
    "sorted_unshuffled": ("batches mix classes", r"^1[0-9]/15 one-class batches"),
    "batch_mixing": ("batch independence", r"max leak 0\.0\d+"),
    "dead_relu": ("live activations", r"^2 dead layers"),
    "overconfident_init": ("loss at init", r"^4\.\d+ vs 1\.0986"),
}
HOOK_BUGS = ("no_zero_grad", "validate_in_train_mode", "loss_kept_alive", "clip_before_unscale")  # module hooks


def doctor(bug: str, engine: str) -> dict:
    """The page's command; the full run cut to 3 epochs where the catching check reads none of it."""
    short = [] if CAUGHT[bug][0] in ("lr schedule", "baselines") else ["--max_epochs", "3"]
    return run(["--config", "blobs_mlp", "--config", f"zoo/{bug}", "--engine", engine, *short])


def test_every_zoo_preset_has_its_check_and_page():
    presets = sorted(path.stem for path in (CONFIGS / "zoo").glob("*.yaml"))
    assert presets == sorted(CAUGHT) and len(presets) >= 14
    for bug, (check, _) in CAUGHT.items():
        page = (ROOT / "docs" / "zoo" / f"{bug}.md").read_text()
        assert f"`{check}`" in page, f"docs/zoo/{bug}.md does not name the check that catches it"


@pytest.mark.parametrize("bug", sorted(CAUGHT))
def test_doctor_catches_the_bug(bug, in_tmp, capsys):
    check, number = CAUGHT[bug]
    found = doctor(bug, "hand")["checks"][check]
    assert found.status == "fail", found.line()
    assert re.search(number, found.number), found.line()
    assert f"FAIL  {check}" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("bug", HOOK_BUGS)
def test_doctor_catches_the_hook_bugs_under_lightning_too(bug, in_tmp):
    check, number = CAUGHT[bug]
    found = doctor(bug, "lightning")["checks"][check]
    assert found.status == "fail" and re.search(number, found.number), found.line()


@pytest.mark.parametrize("bug", sorted(CAUGHT))
def test_each_page_shows_the_command_that_catches_it(bug):
    page = (ROOT / "docs" / "zoo" / f"{bug}.md").read_text()
    assert f"toyloops doctor --config blobs_mlp --config zoo/{bug} --engine hand" in page
    check = CAUGHT[bug][0]
    assert re.search(rf"^FAIL +{re.escape(check)} ", page, flags=re.MULTILINE), f"the page shows no FAIL {check} line"

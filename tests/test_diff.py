"""toyloops diff: two trainings side by side, and the first step, stage and tensor where they part.

The user code each case diffs (a module drawing one extra random number, a loss scale clipped
before it is undone, an edited net, a data module with a shuffle seed of its own) is in
tests/diff_modules.py, given by import path as a user gives theirs."""

import json
import re
import shlex

import pytest
from conftest import CONFIGS, ROOT
from test_loop import CASES

from toyloops.__main__ import main
from toyloops.tools.diff import PARTED, diff, parse
from toyloops.tools.diff_record import STAGES, record_run

BLOBS = ["--config", str(CONFIGS / "blobs_mlp.yaml")]


def first(result):
    assert result.parted
    return result.first.step, result.first.stage, result.first.name


def test_the_same_run_twice_does_not_part():
    result = diff(BLOBS, max_steps=3)
    assert result.first is None and result.differences == [] and result.steps == (3, 3)
    assert len(result.per_step) == 3 and all(set(step) == set(STAGES) for step in result.per_step)
    assert all(value == 0.0 for step in result.per_step for value in step.values())


@pytest.mark.parametrize("engine", ["lightning", "hand"])
def test_each_engine_records_the_samples_of_each_batch(engine):
    steps = record_run([*BLOBS, "--data.n_samples=300", "--data.batch_size=32"], engine, max_steps=7)
    indices = [step["batch", "indices"] for step in steps]
    assert [len(i) for i in indices] == [32] * 5 + [20, 32]  # 180 train samples: 5 full batches, 20, a new epoch
    assert sorted(set().union(*(i.tolist() for i in indices[:6]))) == list(range(180))


def test_one_extra_random_draw_before_the_forward_pass_parts_at_the_first_dropout():
    # the MLP is Linear, ReLU, Dropout, ...: the masks after the extra draw differ, the layers before it do not
    result = diff(BLOBS, [*BLOBS, "--model", "diff_modules.ExtraDraw"], max_steps=5)
    assert first(result) == (0, "forward", "net.layers.2")
    assert result.first.b == 0.0 and result.first.a != 0.0  # dropped in B's mask, kept in A's


def test_one_extra_random_draw_after_the_step_parts_at_the_torch_stream_and_nowhere_else():
    result = diff(BLOBS, [*BLOBS, "--model", "diff_modules.DrawAfter"], max_steps=3)
    assert first(result) == (0, "rng", "torch")
    assert [(d.stage, d.name) for d in result.differences] == [("rng", "torch")]  # numpy and python untouched


def test_another_shuffle_seed_parts_at_the_batch_indices_of_step_0():
    data = [*BLOBS, "--data", "diff_modules.ShuffleSeed"]
    result = diff(data, [*data, "--data.shuffle_seed", "1"], max_steps=5)
    assert first(result) == (0, "batch", "indices")
    assert [d.name for d in result.differences][:2] == ["indices", "batch[0]"]  # the samples, then their values


def test_fp32_against_bf16_parts_at_the_first_layer_and_within_a_tolerance_one_step_later():
    bf16 = [*BLOBS, "--trainer.precision", "bf16-mixed"]
    assert first(diff(BLOBS, bf16, max_steps=3)) == (0, "forward", "net.layers.0")  # bf16's rounding, at once
    # atol 0.02: AdamW's first update is about lr (0.01) times a sign, so a gradient whose sign bf16 flips moves
    # its weight ~0.02 apart; every tensor of step 0 stays within that, the first layer of step 1 does not
    result = diff(BLOBS, bf16, max_steps=5, atol=0.02)
    assert first(result) == (1, "forward", "net.layers.0")
    assert 0.02 < result.first.max_abs < 0.1
    assert max(result.per_step[0].values()) <= 0.02


def test_clipping_before_unscaling_parts_at_the_gradient_the_step_sees():
    # CPU has no fp16 GradScaler in either engine: a module scales its loss by 1024 and unscales in
    # on_before_optimizer_step itself. A clips in real units (the trainer's clip, after that hook); B clips in
    # on_after_backward, the still-scaled gradients, so its clip binds and the real gradient shrinks ~1000x.
    a = [*BLOBS, "--model", "diff_modules.ScaledLoss"]
    b = [*BLOBS, "--model", "diff_modules.ClipBeforeUnscale", "--trainer.gradient_clip_val", "0"]
    result = diff(a, b, max_steps=3)
    assert first(result) == (0, "grad_to_step", "net.layers.0.weight")
    assert abs(result.first.b) < abs(result.first.a) / 100
    assert not any(d.stage in ("loss", "grad") for d in result.differences)  # the same loss and raw gradients


def test_a_scheduler_stepped_per_step_parts_at_the_learning_rate_of_step_1():
    result = diff(BLOBS, [*BLOBS, "--model.scheduler_interval", "step"], max_steps=5)
    assert first(result) == (1, "lr", "group0")
    assert result.first.a == 0.01 and result.first.b < 0.01  # A's cosine waits for the epoch's end
    assert result.steps == (5, 2)  # B stopped at its first divergent step


def test_an_edit_to_a_users_net_names_the_edited_submodule():
    a = [*BLOBS, "--model.net", "diff_modules.UserNet"]
    result = diff(a, [*BLOBS, "--model.net", "diff_modules.UserNetEdited"], max_steps=3)
    assert first(result) == (0, "forward", "net.act")  # net.encoder, before it, agrees


def test_a_layer_of_another_width_parts_at_its_output_shape():
    net = [*BLOBS, "--model.net", "diff_modules.UserNet"]
    result = diff(net, [*net, "--model.net.hidden", "17"], max_steps=2)
    assert first(result) == (0, "forward", "net.encoder")
    assert result.first.note == "shape (64, 16) vs (64, 17)" and result.first.a is None


def test_a_module_called_twice_in_a_step_is_recorded_twice_by_name():
    steps = record_run([*BLOBS, "--model.net", "diff_modules.SharedLayerNet"], "hand", max_steps=1)
    forward = [name for stage, name in steps[0] if stage == "forward"]
    # in the order the calls end: the net itself after its layers
    assert forward == ["net.encoder", "net.act", "net.shared", "net.act#2", "net.shared#2", "net.head", "net"]


def test_a_side_that_runs_out_of_steps_first_parts_at_its_last_step():
    result = diff(BLOBS, [*BLOBS, "--trainer.limit_train_batches=2", "--trainer.max_epochs=1"], max_steps=4)
    assert first(result) == (2, "steps", "steps run") and result.steps == (4, 2)
    assert result.first.note == "A ran 4 steps, B 2"


def test_shared_settings_go_to_both_sides_and_a_sides_config_replaces_the_shared_one():
    options = parse(["--config", "A.yaml", "--trainer.max_epochs", "3", "--b.config=B.yaml", "--b.config", "P.yaml",
                     "--b.trainer.precision", "bf16-mixed", "--engine", "hand", "--a.engine", "lightning",
                     "--continue", "--atol=0.5"])
    assert options["a"] == ["--config", "A.yaml", "--trainer.max_epochs", "3"]
    assert options["b"] == ["--config", "B.yaml", "--config", "P.yaml", "--trainer.max_epochs", "3",
                            "--trainer.precision", "bf16-mixed"]
    assert options["engines"] == ("lightning", "hand") and options["keep_going"] and options["atol"] == 0.5


def test_keep_going_records_every_step_and_the_divergence_grows():
    result = diff(BLOBS, [*BLOBS, "--model.scheduler_interval", "step"], max_steps=8, keep_going=True)
    assert result.steps == (8, 8) and {d.step for d in result.differences} == set(range(1, 8))
    params = [step["param"] for step in result.per_step]
    assert params[0] == 0.0 and params[1] > 0.0 and params[-1] > 10 * params[2]


# Every case the parity tests hold bit for bit (tests/test_loop.py), on less data: 6 batches an epoch, so
# 16 steps cross epoch ends (validation, epoch schedulers, plateau and early-stopping checks).
PARITY = {**{case: args for case, args in CASES.items()},
          **{f"{case}_bf16": [*CASES[case], "--trainer.precision=bf16-mixed"] for case in ("mlp", "transformer")}}


@pytest.mark.parametrize("case", PARITY)
def test_lightning_and_the_hand_trainer_do_not_part_on_any_parity_case(case):
    args = [*PARITY[case], "--data.n_samples=300", "--data.batch_size=32"]
    result = diff(args, engines=("lightning", "hand"), max_steps=16)
    assert result.first is None, result.first
    # early stopping may end both before 16; the debug preset trains 2 batches
    assert result.steps[0] == result.steps[1] >= (2 if case == "debug" else 12)


def test_the_command_prints_writes_its_folder_and_exits_3_when_the_runs_part(in_tmp, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["diff", "--config", "blobs_mlp", "--b.model.scheduler_interval", "step", "--max_steps", "4"])
    assert stop.value.code == PARTED
    out = capsys.readouterr().out
    assert "first divergence: step 1, lr, group0" in out
    folder = in_tmp / "logs/diff/blobs_mlp/diff_0"
    assert f"results: {folder.relative_to(in_tmp)}" in out
    record = json.loads((folder / "diff.json").read_text())
    assert record["parted"] and record["first"]["stage"] == "lr" and record["first"]["step"] == 1
    assert (folder / "report.txt").read_text().startswith("A: lightning")
    assert (folder / "divergence.png").read_bytes()[:4] == b"\x89PNG"
    assert list(folder.glob("events.out.tfevents.*"))


def test_the_command_exits_0_when_the_engines_agree(in_tmp, capsys):
    main(["diff", "--config", "blobs_mlp", "--a.engine", "lightning", "--b.engine", "hand", "--max_steps", "2",
          "--name", "engines"])
    assert "no divergence: every tensor of 2 steps is bit-identical" in capsys.readouterr().out
    assert json.loads((in_tmp / "logs/diff/engines/diff_0/diff.json").read_text())["first"] is None


@pytest.mark.parametrize(("args", "message"), [
    (["--engine", "fabric"], "--engine='fabric': expected one of lightning, hand"),
    (["--max_steps", "0"], "max_steps=0: expected a whole number >= 1"),
    (["--atol", "x"], "--atol='x': expected a number"),
    (["--b.engine"], "--b.engine needs a value"),
    (["stray"], "unexpected argument 'stray'"),
])
def test_a_mistake_is_one_line_and_exit_1_before_anything_trains(args, message, in_tmp, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["diff", "--config", "blobs_mlp", *args])
    assert stop.value.code == f"error: {message}" or message in str(stop.value.code)
    assert not (in_tmp / "logs").exists()


def test_a_mistake_on_side_b_is_one_line_and_leaves_no_folder(in_tmp, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["diff", "--config", "blobs_mlp", "--b.trainer.precision", "16"])
    assert stop.value.code.startswith("error: trainer.precision='16'")
    assert not (in_tmp / "logs/diff/blobs_mlp").exists()


def test_help_prints_the_options(capsys):
    main(["diff", "--help"])
    assert "--a.KEY V, --b.KEY V" in capsys.readouterr().out


def test_a_side_without_a_config_is_named(in_tmp):
    with pytest.raises(SystemExit) as stop:
        main(["diff", "--a.config", "blobs_mlp"])
    assert "side B has no config" in str(stop.value.code)


# docs/diff.md: each ```bash line with the ```text block after it, its output (tests/test_docs.py leaves these to here)
DOCUMENTED = re.findall(r"```bash\n(toyloops diff [^\n]+)\n```\n\n```text\n(.*?)```",
                        (ROOT / "docs/diff.md").read_text(), flags=re.DOTALL)


def masked(text):
    """The output with its fractional numbers as ``#``: steps, stages, names and the layout stay."""
    return re.sub(r"-?\d+\.\d+(e-?\d+)?", "#", text).strip()


@pytest.mark.parametrize(("command", "shown"), DOCUMENTED, ids=[command for command, _ in DOCUMENTED])
def test_each_diff_on_the_docs_page_prints_what_the_page_shows(command, shown, tmp_path, monkeypatch, capsys):
    assert len(DOCUMENTED) == 3
    (tmp_path / "configs").symlink_to(ROOT / "configs")  # laid out as a clone, as tests/test_docs.py runs lines
    monkeypatch.chdir(tmp_path)
    try:
        main(shlex.split(command)[1:])
        code = 0
    except SystemExit as stop:
        code = stop.code
    assert code == (PARTED if "first divergence" in shown else 0)
    assert masked(capsys.readouterr().out) == masked(shown)

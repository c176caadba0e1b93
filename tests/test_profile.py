"""``toyloops profile``: both engines' steps split into measured buckets, the sweeps, the files."""

from conftest import CONFIGS
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from toyloops.tools.profile import BUCKETS, run


def test_profile_splits_both_engines_steps_into_buckets_and_writes_its_files(in_tmp):
    result = run(["--config", str(CONFIGS / "blobs_logistic.yaml"), "--batch-sizes", "1,16", "--steps", "6",
                  "--epochs", "2"])
    for engine, measured in result["profiled"].items():
        buckets = measured.buckets
        assert tuple(buckets) == BUCKETS
        assert all(value >= 0 for value in buckets.values()), (engine, buckets)  # no time counted twice
        assert abs(sum(buckets.values()) - measured.step_s) < 1e-9 * measured.step_s + 1e-12
        # every part of a step that both engines run was caught by its own timer
        for bucket in ("data gather", "host->device", "forward", "loss", "backward", "optimizer step", "logging"):
            assert buckets[bucket] > 0, (engine, bucket)
    assert result["profiled"]["loop"].buckets["callbacks"] == 0 < result["profiled"]["lightning"].buckets["callbacks"]
    assert set(result["sweep"]) == {(e, b) for e in ("loop", "lightning") for b in (1, 16)}
    small, large = result["memory"][1], result["memory"][16]
    assert small["parameters"] == large["parameters"] == large["gradients"] > 0
    assert large["optimizer state"] == 0  # this config's plain SGD keeps none
    assert 0 < small["activations"] < large["activations"] and large["peak"] > 0

    text = result["markdown"].read_text()
    assert all(f"| {bucket} |" in text for bucket in BUCKETS) and "## Batch sweep" in text and "## Memory" in text
    assert Image.open(result["chart"]).size == (760, 380)
    events = EventAccumulator(str(result["run_dir"])).Reload()
    assert events.Tags()["images"] == ["profile/step_buckets"]
    assert result["run_dir"].resolve().parent == in_tmp / "logs" / "blobs_logistic"

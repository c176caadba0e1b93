"""The notebook tour (docs/tour.py): its sections in the issue's order, ``toyloops tour`` executing it in
a real Jupyter kernel, and the numbers the executed notebook shows. (The site that renders it, in a
browser: tests/test_docs.py.)"""

import base64
import io
import re

import jupytext
import nbformat
import pytest
from conftest import ROOT
from PIL import Image

from toyloops.__main__ import main
from toyloops.tools.tour import SOURCE

SECTIONS = ["## 1. The toy sets", "## 2. The minimal pair: one run, two ways",
            "## 3. One rung lower: NumPy, gradients by hand", "## 4. The decision boundary taking shape",
            "## 5. A bug, and the tools that find it", "## 6. What one run cannot tell you: seeds and sweeps",
            "## 7. Where to go next"]
PLOTS = 10  # toy sets, token tasks, loss curves, differences, boundaries by epoch, MLP vs logistic, the bug's lr and
# loss against the clean run's, seeds, sweep x2


def test_the_tour_is_a_percent_notebook_in_the_issues_order():
    assert SOURCE == ROOT / "docs" / "tour.py"
    notebook = jupytext.read(SOURCE)
    headings = [line for cell in notebook.cells if cell.cell_type == "markdown"
                for line in cell.source.splitlines() if line.startswith("## ")]
    assert headings == SECTIONS
    assert notebook.metadata["jupytext"]["text_representation"]["format_name"] == "percent"
    assert all(not cell.get("outputs") for cell in notebook.cells)  # git holds the source only


def printed(notebook: nbformat.NotebookNode) -> str:
    return "".join(out.text for cell in notebook.cells if cell.cell_type == "code"
                   for out in cell.outputs if out.output_type == "stream" and out.name == "stdout")


@pytest.mark.integration
def test_the_tour_runs_top_to_bottom_and_shows_its_numbers(executed_tour):
    notebook = nbformat.read(executed_tour, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1))  # every cell ran, in order
    assert [out for cell in code for out in cell.outputs if out.output_type == "error"] == []
    text = printed(notebook)
    # the toy sets' baselines
    assert "blobs          0.500     0.555     0.994\n" in text and "spirals        0.500     0.555     1.000\n" in text
    # the minimal pair: both files print the same accuracy, every weight torch.equal
    assert text.count("val/acc 0.9833\n") == 2
    assert re.search(r"\{('layers\.\d\.(weight|bias)': True(, )?){6}\}", text)
    assert "max |weight difference| 0.0; final val/acc: lightning 0.9833, loop 0.9833" in text
    # NumPy against the hand loop, and the gradient check
    numpy = [float(x) for x in re.findall(r"max \|NumPy - hand loop\| = (\S+)", text)]
    gradients = [float(x) for x in re.findall(r"max \|manual - finite difference\| = (\S+)", text)]
    assert len(numpy) == 4 and max(numpy) < 1e-10 and len(gradients) == 2 and max(gradients) < 1e-8
    # the boundary: the MLP separates the spirals, a line does not
    assert "MLP: best val/acc 1.000 (20 boundary images)" in text and "logistic regression: best val/acc 0.675" in text
    # the bug (zoo/scheduler_per_batch): its lr saw, doctor's failing check, diff's first divergence
    assert "best val/acc: clean 0.9833, scheduler per batch 0.9867\n" in text
    assert "lr stepped per batch: 0 at steps [10, 30, 50, 70, 90, 110, 130] of 150\n" in text
    assert re.search(r"^FAIL  lr schedule +7 troughs +over the run's 150 steps, lr 0\.01 -> 0\.000245$", text,
                     flags=re.MULTILINE)
    assert "\n16 pass, 0 warn, 1 fail\n" in text
    assert "first divergence: step 1, lr, group0\n  max |A - B| 0.000245: A 0.01, B 0.00975528258\n" in text
    # seeds: mean and interval of each config, the paired difference and its p-value
    means = dict(re.findall(r"^(spirals_\w+): (\d\.\d{4}) ±", text, flags=re.MULTILINE))
    assert float(means["spirals_mlp"]) > 0.99 > float(means["spirals_small"])
    paired = r"spirals_mlp - spirals_small: \S+ \(95% CI (\S+) \.\. \S+\), paired t-test p = (\S+)"
    low, p = re.search(paired, text).groups()
    assert float(low) > 0 and float(p) < 0.01
    # the sweep: eight trials, its best
    counts = re.search(r"^trials: (.*)$", text, flags=re.MULTILINE).group(1)
    assert sum(int(n) for n in re.findall(r"(\d+) \w+", counts)) == 8
    best = re.search(r"^best: trial \d+, val/acc \(max\) (\S+),", text, flags=re.MULTILINE).group(1)
    assert float(best) > 0.535  # the majority class (the sampler is not seeded: the trials differ run to run)
    # the plots, inline
    plots = [out.data["image/png"] for cell in code for out in cell.outputs if "image/png" in out.get("data", {})]
    assert len(plots) == PLOTS
    for png in plots:
        assert min(Image.open(io.BytesIO(base64.b64decode(png))).size) > 100


def test_the_tour_command_writes_no_file_over_another(tmp_path, monkeypatch, capsys):
    """Checked before the kernel starts: no tour runs, nothing is written."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tour.ipynb").write_text("mine")
    for args, said in ((["tour"], "tour.ipynb exists: toyloops does not overwrite it"),
                       (["tour", "--output", "tour.md"], "--output 'tour.md': expected a path ending in .ipynb"),
                       (["tour", "--out", "x.ipynb"], "toyloops tour takes --output PATH only, got '--out x.ipynb'")):
        with pytest.raises(SystemExit) as stop:
            main(args)
        assert str(stop.value.code).startswith(f"error: {said}"), stop.value.code
    assert (tmp_path / "tour.ipynb").read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == [
        "tour.ipynb"]

"""epiformer_cli.training.plots: the learning curve draws the valid rows as lines and the test row as
a marked, labelled point at the step of the model it scored; the loss axis says what the loss is
(the Poisson NLL per bin, up to a constant: it can be negative), a training loss of another scale
gets its own axis; rows read back from metrics.tsv (strings, an empty train_loss) draw the same."""

from __future__ import annotations

import math

import pytest

pytest.importorskip("matplotlib")

from epiformer_cli.training import metrics_file
from epiformer_cli.training import plots as training_plots
from epiformer_cli.training.plots import EVAL_LOSS, curve_data, plot_learning_curve

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TRACKS = ["MG", "OPC $1"]
ROWS = [
    {"split": "valid", "epoch": 1, "step": 10, "train_loss": 0.5, "loss": -0.25, "pearson": 0.4,
     "pearson_MG": 0.5, "pearson_OPC $1": 0.3, "lr": 0.001, "seconds": 1.0, "windows_per_s": 5.0},
    {"split": "valid", "epoch": 2, "step": 20, "train_loss": -0.5, "loss": -0.75, "pearson": 0.6,
     "pearson_MG": 0.7, "pearson_OPC $1": 0.5, "lr": 0.0005, "seconds": 2.0, "windows_per_s": 5.0},
    {"split": "valid", "epoch": 3, "step": 30, "train_loss": -0.625, "loss": -0.5, "pearson": 0.5,
     "pearson_MG": 0.6, "pearson_OPC $1": 0.4, "lr": 0.0001, "seconds": 3.0, "windows_per_s": 5.0},
    {"split": "test", "epoch": 2, "step": 20, "train_loss": "", "loss": -0.625, "pearson": 0.55,
     "pearson_MG": 0.625, "pearson_OPC $1": 0.475, "lr": "", "seconds": 3.0, "windows_per_s": ""},
]


@pytest.fixture
def drawn(monkeypatch):
    figures = []
    save = training_plots.save_png
    monkeypatch.setattr(training_plots, "save_png",
                        lambda fig, path, **kw: (figures.append(fig), save(fig, path, **kw)))
    return figures


def test_curve_data_takes_the_valid_rows_and_the_test_row():
    data = curve_data(ROWS)
    assert data.steps == [10, 20, 30]
    assert data.train_loss == [0.5, -0.5, -0.625] and data.loss == [-0.25, -0.75, -0.5]
    assert data.pearson == [0.4, 0.6, 0.5]
    assert data.by_track == {"MG": [0.5, 0.7, 0.6], "OPC $1": [0.3, 0.5, 0.4]}
    assert data.test == {"step": 20, "epoch": 2.0, "loss": -0.625, "pearson": 0.55}
    assert curve_data(ROWS[:3]).test is None
    assert curve_data(ROWS[3:]) is None


def test_rows_read_back_from_metrics_tsv_give_the_same_data(tmp_path):
    metrics_file.write_rows(tmp_path / "metrics.tsv", ROWS, TRACKS)
    back = metrics_file.read_rows(tmp_path / "metrics.tsv")
    assert all(isinstance(v, str) for v in back[0].values())
    assert curve_data(back) == curve_data(ROWS)


def lines(ax):
    return {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.lines}


def test_the_test_row_is_a_labelled_point_at_its_step(tmp_path, drawn):
    assert plot_learning_curve(ROWS, tmp_path / "curve.png", loss="poisson")
    assert (tmp_path / "curve.png").read_bytes()[:8] == PNG_SIGNATURE
    fig = drawn[0]
    ax_loss, ax_r = fig.axes
    loss_lines = lines(ax_loss)
    assert loss_lines["valid"] == ([10, 20, 30], [-0.25, -0.75, -0.5])
    assert loss_lines["test (model of step 20): -0.625"] == ([20], [-0.625])
    train = next(k for k in loss_lines if k.startswith("train: the same Poisson NLL"))
    assert loss_lines[train] == ([10, 20, 30], [0.5, -0.5, -0.625])
    r_lines = lines(ax_r)
    assert r_lines["valid, mean over tracks"] == ([10, 20, 30], [0.4, 0.6, 0.5])
    assert r_lines["test, mean over tracks (model of step 20): 0.550"] == ([20], [0.55])
    assert r_lines["valid, OPC \\$1"] == ([10, 20, 30], [0.3, 0.5, 0.4])  # a user's name: no mathtext
    assert [t.get_text() for t in ax_r.texts] == ["test 0.550"]
    # units: what the loss is, and that it may be negative
    assert ax_loss.get_ylabel() == EVAL_LOSS
    assert "Poisson NLL per 128 bp bin" in EVAL_LOSS and "can be negative" in EVAL_LOSS
    assert ax_r.get_ylabel() == "Pearson r of log(x + 1) per 128 bp bin"
    assert ax_loss.get_xlabel() == ax_r.get_xlabel() == "optimizer step"


def test_a_loss_of_another_scale_gets_its_own_axis(tmp_path, drawn):
    assert plot_learning_curve(ROWS, tmp_path / "curve.png", loss="poisson-multinomial")
    fig = drawn[0]
    assert len(fig.axes) == 3  # loss, Pearson and the training loss's twin
    twin = fig.axes[2]
    assert twin.get_ylabel() == "train loss (poisson-multinomial)"
    assert "valid" not in lines(twin) and len(twin.lines) == 1
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend[0].startswith("train: Poisson-multinomial loss per bin") and legend[1] == "valid"


def test_an_unknown_loss_says_so(tmp_path, drawn):
    assert plot_learning_curve(ROWS[:3], tmp_path / "curve.png")
    legend = [t.get_text() for t in drawn[0].axes[0].get_legend().get_texts()]
    assert legend[0].replace("\n", " ").startswith("train: the run's --loss") and legend[1:] == ["valid"]
    assert len(drawn[0].axes) == 2 and not any(math.isnan(y) for y in lines(drawn[0].axes[0])["valid"][1])


def test_no_valid_row_writes_nothing(tmp_path):
    assert not plot_learning_curve(ROWS[3:], tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()

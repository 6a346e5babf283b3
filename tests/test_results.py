"""`pipeline results`: docs/RESULTS.md written from real runs on all of Fashion-MNIST."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from pipeline import paths
from pipeline.config import load_config
from pipeline.errors import PipelineError
from pipeline.results import write_results
from pipeline.tta import FLIP_ONLY_METRIC, ONE_VIEW_METRIC
from tests.helpers import quick_overrides

pytestmark = [pytest.mark.slow, pytest.mark.dataset]


def test_the_report_refuses_runs_on_slices_with_one_line(sweep, tmp_path):
    """The quick sweep trains on 1,800 images: nothing there counts as a result."""
    with pytest.raises(PipelineError, match="no runs on all of Fashion-MNIST") as err:
        write_results(sweep["config"].tracking, docs=tmp_path)
    assert "\n" not in str(err.value) and not (tmp_path / "RESULTS.md").exists()


def test_the_report_is_written_from_a_run_on_all_the_data(tmp_path, monkeypatch):
    """One epoch of LeNet on all 54,000 training images, promoted, then the report; in a file
    store, as the GPU proof keeps one, so that its tarball is read back too."""
    from bench.gpu.check import pack
    from pipeline.results import gpu_section
    from pipeline.selection import promote
    from pipeline.sweep import train

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    store = tmp_path / "store"
    config = load_config(
        paths.CONFIG_DIR / "quick.yaml",
        quick_overrides(
            store,
            f"tracking.tracking_uri=file:{store}/mlruns",
            "models=[lenet]",
            "data.train_limit=null",
            "data.test_limit=null",
            "train.epochs=1",
            "augment.test_flip=true",
            "augment.test_shift=1",
            "tracking.experiment=results-test",
            # Its own name: promoting into the session's BentoML store under the shared
            # name would make this LeNet the `latest` that the service tests serve.
            "tracking.registered_model=cnn-results-test",
        ),
    )
    sweep = train(config)
    promote(config.tracking, sweep.parent_run_id)
    (run,) = sweep.runs

    out = write_results(config.tracking, docs=tmp_path / "docs")
    text = out.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| lenet"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert float(cells[1]) == pytest.approx(run.test_accuracy, abs=5e-5)  # test accuracy
    metrics = MlflowClient().get_run(run.run_id).data.metrics
    assert float(cells[2]) == pytest.approx(metrics[ONE_VIEW_METRIC], abs=5e-5)  # one view
    assert "test-time flip + shifts 1 px (10 views)" in row  # the recipe says so
    # The sweep's table gives the flip alone beside them: what the shifts add.
    section = text[text.index("### Sweep `sweep-lenet`") :]
    header = next(line for line in section.splitlines() if line.startswith("| model"))
    sweep_row = next(line for line in section.splitlines() if line.startswith("| lenet"))
    columns = [cell.strip() for cell in header.strip("|").split("|")]
    values = [cell.strip() for cell in sweep_row.strip("|").split("|")]
    flip_only = float(values[columns.index("flip only")])
    assert flip_only == pytest.approx(metrics[FLIP_ONLY_METRIC], abs=5e-5)
    assert run.run_id in row and "0.915" in row  # the run and LeNet's target
    assert f"Champion: **lenet**, `{config.tracking.registered_model}` version\n1" in text
    assert "### Sweep `sweep-lenet`" in text and sweep.parent_run_id in text
    png = (tmp_path / "docs" / "champion_confusion_matrix.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert "## On one GPU: the device proof\n\nNot run yet" in text

    # The GPU proof's tarball of the same store: no weights in it, and its rows read back.
    tarball = tmp_path / "gpu-runs.tar.gz"
    pack(store / "mlruns", tarball)
    import tarfile

    with tarfile.open(tarball) as tar:
        names = tar.getnames()
    assert not [n for n in names if n.endswith((".keras", ".h5"))], names
    assert any(n.endswith("confusion_matrix.png") for n in names)
    gpu = gpu_section(tarball, experiment="results-test")
    gpu_row = next(line for line in gpu.splitlines() if line.startswith("| lenet"))
    assert run.run_id in gpu_row and "| tensorflow |" in gpu_row and "0.925" in gpu_row
    with pytest.raises(PipelineError, match="no mlruns/ folder"):
        gpu_section(tmp_path / "docs")

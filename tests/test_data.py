"""Data: the real IDX files, lookup and download, folder datasets, splits, tf.data pipelines."""

from __future__ import annotations

import functools
import gzip
import http.server
import shutil
import threading

import numpy as np
import pytest
from PIL import Image

from pipeline import data, paths
from pipeline.config import DataConfig
from pipeline.errors import DatasetError
from tests.helpers import FASHION_DIR

#: Data tests: the real Fashion-MNIST files on disk, as the pipeline reads them.
pytestmark = pytest.mark.dataset


def test_real_fashion_mnist_idx(fashion):
    assert fashion.x_train.shape == (60000, 28, 28, 1)
    assert fashion.x_test.shape == (10000, 28, 28, 1)
    assert fashion.x_train.dtype == np.uint8
    assert len(fashion.class_names) == 10
    assert np.bincount(fashion.y_train).tolist() == [6000] * 10
    assert np.bincount(fashion.y_test).tolist() == [1000] * 10


def test_data_folder_is_preferred_over_system_copy(tmp_path, monkeypatch):
    local = tmp_path / "fashion-mnist"
    local.mkdir()
    for name in data.IDX_FILES:
        shutil.copy(FASHION_DIR / name, local / name)
    # A corrupt local copy proves the local folder is the one read.
    with gzip.open(local / "t10k-labels-idx1-ubyte.gz", "wb") as handle:
        handle.write(b"\x00\x00\x08\x01\x00\x00\x27\x10" + b"\x00" * 10)
    monkeypatch.setattr(paths, "DATA_DIR", tmp_path)
    with pytest.raises(DatasetError, match=r"t10k-labels-idx1-ubyte.gz is corrupt: 10 data bytes"):
        data.load_fashion_mnist()


def test_idx_errors_name_the_file(tmp_path):
    not_idx = tmp_path / "x.gz"
    with gzip.open(not_idx, "wb") as handle:
        handle.write(b"hello world")
    with pytest.raises(DatasetError, match="x.gz is not an IDX file"):
        data.read_idx(not_idx)
    broken = tmp_path / "broken.gz"
    broken.write_bytes((FASHION_DIR / "t10k-labels-idx1-ubyte.gz").read_bytes()[:100])
    with pytest.raises(DatasetError, match="cannot read .*broken.gz"):
        data.read_idx(broken)


@pytest.fixture
def local_mirror():
    """An HTTP server on 127.0.0.1 serving the real Debian copy, standing in for the mirror."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(FASHION_DIR))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def test_download_when_nowhere_on_disk(tmp_path, monkeypatch, local_mirror):
    monkeypatch.setattr(paths, "DATA_DIR", tmp_path / "data")
    monkeypatch.setattr(paths, "SYSTEM_DATASETS", tmp_path / "none")
    monkeypatch.setattr(data, "FASHION_MNIST_URL", local_mirror)
    raw = data.load_fashion_mnist()
    assert raw.x_train.shape == (60000, 28, 28, 1)
    for name in data.IDX_FILES:
        assert (tmp_path / "data" / "fashion-mnist" / name).is_file()


def test_failed_download_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "DATA_DIR", tmp_path / "data")
    monkeypatch.setattr(paths, "SYSTEM_DATASETS", tmp_path / "none")
    monkeypatch.setattr(data, "FASHION_MNIST_URL", "http://127.0.0.1:9/")
    with pytest.raises(DatasetError, match="could not download http://127.0.0.1:9/train-images"):
        data.load_fashion_mnist()


def test_unknown_dataset():
    with pytest.raises(DatasetError, match="unknown dataset 'imagenet'"):
        data.load_raw(DataConfig(dataset="imagenet"))


def _write_folder(root, fashion, per_class=6, classes=(0, 1, 7), size=None, mode="L"):
    for c in classes:
        folder = root / data.FASHION_CLASSES[c].replace("/", "-")
        folder.mkdir(parents=True)
        images = fashion.x_train[fashion.y_train == c][:per_class, ..., 0]
        for i, img in enumerate(images):
            pil = Image.fromarray(img).convert(mode)
            if size:
                pil = pil.resize(size)
            pil.save(folder / f"{i}.{'png' if i % 2 else 'jpg'}")


def test_folder_dataset_from_real_pngs_and_jpegs(tmp_path, fashion):
    _write_folder(tmp_path / "ds", fashion, per_class=10, size=(40, 30), mode="RGB")
    config = DataConfig(dataset=f"folder:{tmp_path / 'ds'}", image_size=(32, 32))
    raw = data.load_raw(config)
    assert raw.class_names == ("Sneaker", "T-shirt-top", "Trouser")
    assert raw.x_train.shape[1:] == (32, 32, 3)
    assert len(raw.y_train) + len(raw.y_test) == 30
    assert np.bincount(raw.y_test).tolist() == [2, 2, 2]  # 20% of each class held out


def test_folder_with_train_and_test_subfolders(tmp_path, fashion):
    _write_folder(tmp_path / "ds" / "train", fashion)
    _write_folder(tmp_path / "ds" / "test", fashion, per_class=2)
    raw = data.load_raw(DataConfig(dataset=f"folder:{tmp_path / 'ds'}", channels=1))
    assert raw.x_train.shape == (18, 64, 64, 1)
    assert raw.x_test.shape == (6, 64, 64, 1)


def test_folder_with_corrupt_image_names_it(tmp_path, fashion):
    _write_folder(tmp_path / "ds", fashion)
    bad = tmp_path / "ds" / "Trouser" / "zz.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DatasetError, match=r"unreadable image .*Trouser/zz.png"):
        data.load_raw(DataConfig(dataset=f"folder:{tmp_path / 'ds'}"))


def test_folder_with_empty_class_names_it(tmp_path, fashion):
    _write_folder(tmp_path / "ds", fashion)
    (tmp_path / "ds" / "Empty").mkdir()
    with pytest.raises(DatasetError, match=r"class folder .*Empty has no PNG/JPEG"):
        data.load_raw(DataConfig(dataset=f"folder:{tmp_path / 'ds'}"))


def test_folder_skips_hidden_files_such_as_macos_resource_forks(tmp_path, fashion):
    _write_folder(tmp_path / "ds", fashion, per_class=10)
    trouser = tmp_path / "ds" / "Trouser"
    (trouser / "._0.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble resource fork")
    (trouser / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (trouser / ".thumbs").mkdir()
    (trouser / ".thumbs" / "0.png").write_bytes(b"not an image either")
    raw = data.load_raw(DataConfig(dataset=f"folder:{tmp_path / 'ds'}"))
    assert len(raw.y_train) + len(raw.y_test) == 30


def test_a_folder_too_small_to_split_says_so_in_one_line(tmp_path, fashion):
    _write_folder(tmp_path / "ds", fashion, per_class=2)
    with pytest.raises(DatasetError, match="too few images to hold out") as caught:
        data.load_splits(DataConfig(dataset=f"folder:{tmp_path / 'ds'}"), seed=0)
    assert "\n" not in str(caught.value)


def test_missing_folder():
    with pytest.raises(DatasetError, match="dataset folder /nonexistent does not exist"):
        data.load_raw(DataConfig(dataset="folder:/nonexistent"))


def _unique_ids_dataset(n=1000, classes=10):
    """Images whose pixels encode their index, so overlaps between splits are detectable."""
    ids = np.arange(n)
    x = np.zeros((n, 28, 28, 1), dtype=np.uint8)
    x[:, 0, 0, 0] = ids % 256
    x[:, 0, 1, 0] = ids // 256
    y = ids % classes
    return data.RawDataset("synthetic", tuple(map(str, range(classes))), x, y, x[:100], y[:100])


def _ids(x):
    return set((x[:, 0, 0, 0].astype(int) + 256 * x[:, 0, 1, 0].astype(int)).tolist())


def test_splits_are_stratified_disjoint_and_deterministic():
    raw = _unique_ids_dataset()
    config = DataConfig(val_fraction=0.2)
    a = data.make_splits(raw, config, seed=1)
    b = data.make_splits(raw, config, seed=1)
    c = data.make_splits(raw, config, seed=2)
    assert np.array_equal(a.y_val, b.y_val) and np.array_equal(a.x_train, b.x_train)
    assert _ids(a.x_val) != _ids(c.x_val)
    assert np.bincount(a.y_val).tolist() == [20] * 10
    assert not _ids(a.x_train) & _ids(a.x_val)
    assert len(_ids(a.x_train) | _ids(a.x_val)) == 1000
    assert np.array_equal(a.x_test, raw.x_test)  # the test set is never touched


def test_limits_keep_class_balance(fashion):
    splits = data.make_splits(fashion, DataConfig(train_limit=1000, test_limit=200), seed=0)
    assert splits.sizes() == {"train": 900, "val": 100, "test": 200}
    assert np.bincount(splits.y_test).tolist() == [20] * 10
    assert splits.spec.input_shape == (28, 28, 1)
    assert 0.2 < splits.spec.mean[0] < 0.4 and 0.25 < splits.spec.std[0] < 0.45


def test_training_batches_are_shuffled_and_evaluation_batches_are_not(fashion):
    from pipeline.training import make_dataset

    x, y = fashion.x_test[:64], fashion.y_test[:64]
    train = np.concatenate([b[1].numpy() for b in make_dataset(x, y, 16, training=True, seed=3)])
    evaluation = make_dataset(x, y, 16, training=False)
    first = np.concatenate([b[0].numpy() for b in evaluation])
    assert np.array_equal(np.sort(train), np.sort(y)) and not np.array_equal(train, y)
    assert np.array_equal(first, x.astype(np.float32))
    assert np.array_equal(first, np.concatenate([b[0].numpy() for b in evaluation]))


def test_array_batches_reshuffle_each_epoch_repeatably_and_resume_in_order(fashion):
    """JAX's input pipeline (pipeline/training.py), which any backend can read."""
    from pipeline.training import ArrayBatches

    x, y = fashion.x_test[:70], fashion.y_test[:70]

    def epoch(batches: ArrayBatches) -> np.ndarray:
        labels = np.concatenate([batches[i][1] for i in range(len(batches))])
        batches.on_epoch_end()
        return labels

    run = ArrayBatches(x, y, 16, training=True, seed=3)
    assert len(run) == 5 and run[4][0].shape == (6, 28, 28, 1) and run[0][0].dtype == np.float32
    first, second = epoch(run), epoch(run)
    assert np.array_equal(np.sort(first), np.sort(y)) and not np.array_equal(first, y)
    assert not np.array_equal(first, second)
    again = ArrayBatches(x, y, 16, training=True, seed=3)
    assert np.array_equal(epoch(again), first)  # the same seed, the same order
    resumed = ArrayBatches(x, y, 16, training=True, seed=3)
    resumed.start_at(1)
    assert np.array_equal(epoch(resumed), second)
    dropped = ArrayBatches(x, y, 16, training=True, seed=3, drop_remainder=True)
    assert len(dropped) == 4
    evaluation = ArrayBatches(x, y, 16, training=False)
    assert np.array_equal(epoch(evaluation), y) and np.array_equal(epoch(evaluation), y)


def test_mnist_reads_idx_files_from_data_folder(tmp_path, monkeypatch):
    (tmp_path / "mnist").mkdir()
    for name in data.IDX_FILES:  # the same IDX format, so real files stand in for MNIST's
        shutil.copy(FASHION_DIR / name, tmp_path / "mnist" / name)
    monkeypatch.setattr(paths, "DATA_DIR", tmp_path)
    raw = data.load_raw(DataConfig(dataset="mnist"))
    assert raw.class_names == tuple("0123456789")
    assert raw.x_train.shape == (60000, 28, 28, 1) and raw.x_test.shape == (10000, 28, 28, 1)


def test_mnist_falls_back_to_the_keras_npz(tmp_path, monkeypatch, fashion):
    (tmp_path / "mnist").mkdir()
    np.savez(tmp_path / "mnist" / "mnist.npz", x_train=fashion.x_train[:100, ..., 0],
             y_train=fashion.y_train[:100], x_test=fashion.x_test[:50, ..., 0],
             y_test=fashion.y_test[:50])  # fmt: skip
    monkeypatch.setattr(paths, "DATA_DIR", tmp_path)
    monkeypatch.setattr(paths, "SYSTEM_DATASETS", tmp_path / "none")
    raw = data.load_mnist()
    assert raw.x_train.shape == (100, 28, 28, 1)
    assert np.array_equal(raw.y_test, fashion.y_test[:50])


def test_cifar10_reads_the_python_batches(tmp_path, monkeypatch, fashion):
    """Batches in CIFAR-10's own pickle layout (rows of 3x32x32 bytes), from real images."""
    import pickle

    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rgb = np.stack([np.asarray(Image.fromarray(img[..., 0]).resize((32, 32)).convert("RGB"))
                    for img in fashion.x_test[:60]])  # fmt: skip
    rows = rgb.transpose(0, 3, 1, 2).reshape(60, -1)
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        batch = {b"data": rows[i * 10 : (i + 1) * 10],
                 b"labels": fashion.y_test[i * 10 : (i + 1) * 10].tolist()}  # fmt: skip
        (folder / name).write_bytes(pickle.dumps(batch))
    monkeypatch.setattr(paths, "DATA_DIR", tmp_path)
    raw = data.load_raw(DataConfig(dataset="cifar10"))
    assert raw.x_train.shape == (50, 32, 32, 3) and raw.x_test.shape == (10, 32, 32, 3)
    assert np.array_equal(raw.x_train[0], rgb[0])  # channels end up last, pixels intact
    assert raw.class_names[0] == "airplane"

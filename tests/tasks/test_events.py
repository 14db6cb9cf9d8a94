"""shd, ssc, nmnist: small files in the real formats, read through Tonic, binned, cached."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

tonic = pytest.importorskip("tonic", reason="the event tasks read their files through Tonic")
h5py = pytest.importorskip("h5py", reason="Tonic reads SHD/SSC with h5py")

from ostl.errors import OptionError, OSTLError, TargetError  # noqa: E402
from ostl.run.config import TrainConfig  # noqa: E402
from ostl.run.train import train  # noqa: E402
from ostl.tasks import TASKS, get_task, parse_options, task_options  # noqa: E402
from ostl.tasks.data import DataNotFoundError  # noqa: E402
from ostl.tasks.events import open_offline  # noqa: E402
from ostl.tasks.heidelberg import SHD, SSC  # noqa: E402
from ostl.tasks.nmnist import NMNIST  # noqa: E402

from .conftest import train_steps  # noqa: E402

# The known sample: label 19 (only it), spikes (seconds, channel); binned at 100 steps of 10 ms
# over 1 s: channel 42 twice in step 2, channel 699 in step 97, and one spike after 1 s.
KNOWN_LABEL = 19
KNOWN = [(0.0255, 42), (0.0275, 42), (0.9755, 699), (1.2, 7)]


def write_heidelberg(path: Path, labels: list[int], seed: int = 0) -> None:
    """An HDF5 file laid out as SHD's and SSC's: ragged float16 spike times (s) and uint16
    channels per sample, uint16 labels, and the ``extra`` group (keys, speaker, meta_info)."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    with h5py.File(path, "w") as f:
        times = f.create_dataset("spikes/times", (n,), dtype=h5py.vlen_dtype(np.float16))
        units = f.create_dataset("spikes/units", (n,), dtype=h5py.vlen_dtype(np.uint16))
        for i, label in enumerate(labels):
            if label == KNOWN_LABEL:
                t, u = np.array([k[0] for k in KNOWN]), np.array([k[1] for k in KNOWN])
            else:  # 30 spikes in the label's own band of 35 channels: a learnable signal
                t = np.sort(rng.uniform(0, 0.9, 30))
                u = (rng.integers(0, 35, 30) + 35 * label) % 700
            times[i], units[i] = t.astype(np.float16), u.astype(np.uint16)
        f.create_dataset("labels", data=np.asarray(labels, np.uint16))
        f.create_dataset("extra/keys", data=np.array([f"word-{k}".encode() for k in range(35)]))
        f.create_dataset("extra/speaker", data=(np.arange(n) % 12).astype(np.uint16))
        meta = f.create_group("extra/meta_info")
        meta.create_dataset("gender", data=np.array([b"female", b"male"] * 6))
        meta.create_dataset("age", data=np.arange(20, 32, dtype=np.uint16))
        meta.create_dataset("body_height", data=np.linspace(160, 190, 12))


def nmnist_bytes(events: list[tuple[int, int, int, int]]) -> bytes:
    """N-MNIST's 40-bit events (x, y, t in µs, polarity): x, y, then p in bit 7 of the third
    byte above a 23-bit big-endian timestamp."""
    out = bytearray()
    for x, y, t, p in events:
        out += bytes([x, y, (p << 7) | (t >> 16) & 0x7F, (t >> 8) & 0xFF, t & 0xFF])
    return bytes(out)


def write_nmnist(folder: Path, per_digit: int, seed: int = 0) -> None:
    """Train/<digit>/*.bin and Test/<digit>/*.bin; digit 7's first test recording is known."""
    rng = np.random.default_rng(seed)
    for split in ("Train", "Test"):
        for digit in range(10):
            (folder / split / str(digit)).mkdir(parents=True)
            for k in range(per_digit):
                if split == "Test" and digit == 7 and k == 0:
                    # (x=5, y=9) ON at 25 ms and 27 ms (step 2 of 10 ms steps), OFF at 295 ms
                    # (x=33, y=0: step 29), one event after 300 ms (dropped)
                    ev = [
                        (5, 9, 25_000, 1),
                        (5, 9, 27_000, 1),
                        (33, 0, 295_000, 0),
                        (1, 1, 301_000, 1),
                    ]
                else:
                    t = np.sort(rng.integers(0, 300_000, 40))
                    ev = [(3 * digit, int(rng.integers(0, 34)), int(s), 1) for s in t]
                (folder / split / str(digit) / f"{k:05d}.bin").write_bytes(nmnist_bytes(ev))


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "cache"
    monkeypatch.setenv("OSTL_CACHE", str(path))
    monkeypatch.delenv("OSTL_DATA", raising=False)
    return path


@pytest.fixture
def shd_root(tmp_path: Path) -> Path:
    """Tonic's layout: <root>/SHD/shd_{train,test}.h5 (20 + 10 samples, no archives)."""
    (tmp_path / "data" / "SHD").mkdir(parents=True)
    write_heidelberg(tmp_path / "data" / "SHD" / "shd_train.h5", list(range(18)) * 2 + [0, 1])
    write_heidelberg(tmp_path / "data" / "SHD" / "shd_test.h5", [KNOWN_LABEL, *range(9)], seed=1)
    return tmp_path / "data"


def test_shd_reads_tonic_layout_with_known_spikes_in_known_bins(
    shd_root: Path, cache: Path
) -> None:
    task = SHD(root=str(shd_root))
    assert (task.n_in, task.n_out, task.steps) == (700, 20, 100)
    assert (task.split_size("train"), task.split_size("valid"), task.split_size("test")) == (
        34,
        4,
        10,
    )  # 10 % of the 38 training samples (rounded) validate
    assert sorted(task.labels("test").tolist()) == [*range(9), KNOWN_LABEL]
    batch = next(task.eval_batches("test", 16))
    assert batch.xs.shape == (100, 10, 700) and batch.xs.dtype == torch.float32
    assert batch.targets.shape == (100, 10, 20) and batch.targets.dtype == torch.float32
    assert torch.equal(batch.targets.argmax(-1)[0], task.labels("test"))  # one-hot at each step
    assert torch.equal(batch.targets[0], batch.targets[-1])
    b = task.labels("test").tolist().index(KNOWN_LABEL)
    spikes = batch.xs[:, b].nonzero().tolist()
    assert spikes == [[2, 42], [97, 699]]  # binary: two spikes in a bin count once; 1.2 s dropped
    assert set(batch.xs.unique().tolist()) <= {0.0, 1.0}
    counts = SHD(root=str(shd_root), binary=False)
    xs = next(counts.eval_batches("test", 16)).xs
    assert xs[2, b, 42] == 2 and xs[:, b].sum() == 3


def test_channel_pooling_steps_and_duration(shd_root: Path, cache: Path) -> None:
    task = SHD(root=str(shd_root), channels=140, steps=4, duration_ms=100, binary=False)
    assert task.n_in == 140
    xs = next(task.eval_batches("test", 16)).xs
    b = task.labels("test").tolist().index(KNOWN_LABEL)
    assert xs.shape == (4, 10, 140)
    # 25 ms bins over the first 100 ms: channel 42 -> pooled 8, both spikes in step 1
    assert xs[:, b].nonzero().tolist() == [[1, 8]] and xs[1, b, 8] == 2


def test_sizes_shuffle_and_subset(shd_root: Path, cache: Path) -> None:
    task = SHD(root=str(shd_root), train_size=5, test_size=3)
    assert [task.split_size(s) for s in ("train", "valid", "test")] == [5, 3, 3]
    full = SHD(root=str(shd_root))
    assert task.labels("train").tolist() == full.labels("train")[:5].tolist()
    other = SHD(root=str(shd_root), data_seed=1)
    assert other.labels("train").tolist() != full.labels("train").tolist()
    batches = list(task.train_batches(2, torch.Generator().manual_seed(0)))
    assert [b.xs.shape[1] for b in batches] == [2, 2, 1] and task.num_train_batches(2) == 3


def test_the_cache_is_written_once_and_reused_without_tonic(
    shd_root: Path,
    cache: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    first = SHD(root=str(shd_root), steps=20)
    err = capsys.readouterr().err
    assert "preparing shd train data (one time, cached in" in err and str(cache) in err
    files = sorted(p.name for p in cache.glob("shd-*.npz"))
    assert len(files) == 2 and all("-20x700-1000ms-" in f for f in files)

    class NoTonic:
        def __init__(self, *args: object, **kwargs: object) -> None:
            raise AssertionError("tonic was called although the cache holds the data")

    monkeypatch.setattr(tonic.datasets, "SHD", NoTonic)
    again = SHD(root=str(shd_root), steps=20)
    assert capsys.readouterr().err == ""
    a, b = next(first.eval_batches("test", 32)), next(again.eval_batches("test", 32))
    assert torch.equal(a.xs, b.xs) and torch.equal(a.targets, b.targets)
    with pytest.raises(AssertionError, match="tonic was called"):
        SHD(root=str(shd_root), steps=21)  # other binning: another cache entry
    # a changed source file is converted again
    write_heidelberg(shd_root / "SHD" / "shd_test.h5", [KNOWN_LABEL, 3], seed=2)
    with pytest.raises(AssertionError, match="tonic was called"):
        SHD(root=str(shd_root), steps=20)


def test_tonic_would_download_without_the_archives_but_ostl_never_does(
    shd_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    def download(*args: object, **kwargs: object) -> None:
        calls.append("download")
        raise ConnectionError("no network in the tests")

    monkeypatch.setattr(tonic.dataset, "download_and_extract_archive", download)
    with pytest.raises(ConnectionError):
        tonic.datasets.SHD(save_to=str(shd_root), train=False)  # wants shd_test.h5.zip too
    assert calls == ["download"]
    data = open_offline(tonic.datasets.SHD, shd_root / "SHD", train=False)
    assert len(data) == 10 and calls == ["download"]
    events, label = data[0]
    assert int(label) == KNOWN_LABEL and events["x"].tolist() == [42, 42, 699, 7]


def test_flat_layout_and_environment_variable(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for split, labels in (("train", [0, 1, 2] * 3), ("valid", [3, 4]), ("test", [KNOWN_LABEL])):
        write_heidelberg(tmp_path / f"ssc_{split}.h5", labels)
    monkeypatch.setenv("OSTL_DATA", str(tmp_path))
    task = get_task("ssc", steps=10)
    assert isinstance(task, SSC) and task.n_out == 35 and task.root is None
    assert [task.split_size(s) for s in ("train", "valid", "test")] == [9, 2, 1]  # its own valid
    assert sorted(task.labels("valid").tolist()) == [3, 4]
    xs = next(task.eval_batches("test", 4)).xs
    assert xs.shape == (10, 1, 700) and xs[0, 0, 42] == 1 and xs[9, 0, 699] == 1


def test_missing_files_give_one_line_naming_them_and_where_to_get_them(
    tmp_path: Path, cache: Path
) -> None:
    with pytest.raises(DataNotFoundError) as e:
        SHD(root=str(tmp_path / "nowhere"))
    text = str(e.value)
    assert "\n" not in text and "shd_train.h5, shd_test.h5" in text
    assert str(tmp_path / "nowhere" / "SHD") in text and str(tmp_path / "nowhere") in text
    assert "https://zenkelab.org/resources/spiking-heidelberg-datasets-shd/" in text
    assert isinstance(e.value, OSTLError) and isinstance(e.value, FileNotFoundError)
    with pytest.raises(DataNotFoundError, match=r"root=FOLDER or \$OSTL_DATA.*SHD/shd_train.h5"):
        SHD()  # neither the option nor the variable
    (tmp_path / "SSC").mkdir()
    write_heidelberg(tmp_path / "SSC" / "ssc_train.h5", [1, 2])  # valid and test missing
    with pytest.raises(DataNotFoundError, match="ssc_valid.h5"):
        SSC(root=str(tmp_path))
    with pytest.raises(DataNotFoundError, match="Train, Test in .*NMNIST.*garrickorchard"):
        NMNIST(root=str(tmp_path))


def test_labels_outside_the_classes_are_refused(tmp_path: Path, cache: Path) -> None:
    write_heidelberg(tmp_path / "shd_train.h5", [0, 1, 2] * 4)
    write_heidelberg(tmp_path / "shd_test.h5", [3, 25])  # an SSC label in an SHD folder
    with pytest.raises(TargetError, match=r"shd_test.h5 holds labels 3..25, expected 0..19"):
        SHD(root=str(tmp_path), steps=5)


def test_registered_and_rebuilt_from_their_options(shd_root: Path, cache: Path) -> None:
    assert (TASKS["shd"], TASKS["ssc"], TASKS["nmnist"]) == (SHD, SSC, NMNIST)
    opts = parse_options("shd", [f"root={shd_root}", "channels=140", "binary=false", "steps=8"])
    assert opts == {"root": str(shd_root), "channels": 140, "binary": False, "steps": 8}
    task = get_task("shd", **opts)
    again = get_task("shd", **task_options(task))
    a, b = next(task.eval_batches("valid", 8)), next(again.eval_batches("valid", 8))
    assert torch.equal(a.xs, b.xs) and a.xs.shape == (8, 4, 140)
    assert parse_options("nmnist", ["pool=2", "duration_ms=150"]) == {
        "pool": 2,
        "duration_ms": 150.0,
    }


@pytest.mark.parametrize(
    ("cls", "options", "message"),
    [
        (SHD, {"steps": 0}, "steps must be a positive integer, got 0"),
        (SHD, {"steps": 2.5}, "steps must be a positive integer"),
        (SHD, {"channels": 300}, "channels must be a divisor of 700"),
        (SSC, {"channels": 0}, "channels must be a divisor of 700"),
        (SHD, {"duration_ms": -1.0}, "duration_ms must be a positive number"),
        (SHD, {"train_size": 0}, "train_size must be None or a positive integer"),
        (SHD, {"data_seed": -1}, "data_seed must be a non-negative integer"),
        (NMNIST, {"pool": 3}, "pool must be 1, 2, 17 or 34, got 3"),
        (NMNIST, {"steps": 10**6}, "steps must be below"),
    ],
)
def test_bad_options_are_refused_before_any_file_is_read(
    cls: type, options: dict[str, object], message: str, tmp_path: Path
) -> None:
    with pytest.raises(OptionError, match=message):
        cls(root=str(tmp_path / "nowhere"), **options)


def test_nmnist_bin_files_through_tonic(tmp_path: Path, cache: Path) -> None:
    write_nmnist(tmp_path / "NMNIST", per_digit=3)
    task = NMNIST(root=str(tmp_path))
    assert (task.n_in, task.n_out, task.steps) == (2312, 10, 30)
    assert [task.split_size(s) for s in ("train", "valid", "test")] == [27, 3, 30]
    assert sorted(task.labels("test").tolist()) == sorted(list(range(10)) * 3)
    batch = next(task.eval_batches("test", 64))
    assert batch.xs.shape == (30, 30, 2312) and batch.targets.shape == (30, 30, 10)
    labels = task.labels("test")
    known = [
        b
        for b in range(30)
        if labels[b] == 7 and batch.xs[:, b].sum() == 2  # the known recording
    ]
    assert len(known) == 1
    # flattened (polarity, y, x): ON (p=1) at y=9, x=5 -> 1156 + 9*34 + 5; OFF at y=0, x=33
    assert batch.xs[:, known[0]].nonzero().tolist() == [[2, 1156 + 9 * 34 + 5], [29, 33]]
    pooled = NMNIST(root=str(tmp_path), pool=2, steps=3, binary=False)
    assert pooled.n_in == 578
    xs = next(pooled.eval_batches("test", 64)).xs
    b = next(b for b in range(30) if pooled.labels("test")[b] == 7 and xs[:, b].sum() == 3)
    # 100 ms steps, 2×2 blocks: both ON events in step 0, block (y=4, x=2) of polarity 1;
    # the OFF event in step 2, block (y=0, x=16) of polarity 0
    assert xs[0, b, 289 + 4 * 17 + 2] == 2 and xs[2, b, 16] == 1


def test_training_steps_run_with_finite_losses(shd_root: Path, cache: Path, rule: str) -> None:
    task = SHD(root=str(shd_root), steps=10, channels=140, train_size=8, test_size=4)
    losses = train_steps(task, rule, batches=2, batch_size=4)
    assert len(losses) == 2


def test_a_tiny_run_trains_and_evaluates(tmp_path: Path, cache: Path) -> None:
    write_nmnist(tmp_path / "NMNIST", per_digit=2)
    options = {"root": str(tmp_path), "steps": 5, "pool": 2, "train_size": 8, "test_size": 4}
    cfg = TrainConfig(
        task="nmnist", rule="osttp", hidden=(8,), epochs=1, batch_size=4, task_options=options
    )
    result = train(cfg, progress=False)
    assert result.metric == "accuracy" and 0.0 <= result.test_metric <= 1.0
    assert result.updates > 0 and all(math.isfinite(v) for v in result.history[-1].values())

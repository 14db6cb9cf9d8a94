"""spoken-digits: eSpeak NG synthesis, the cochlea front end, and the task built from both."""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from ostl.errors import DTypeError, NonFiniteError, OptionError, ShapeError
from ostl.tasks import get_task
from ostl.tasks.audio.cochlea import (
    Cochlea,
    bin_frames,
    delta_spikes,
    hz_to_mel,
    mel_filterbank,
    mel_to_hz,
)
from ostl.tasks.data import MissingDependencyError, one_hot
from ostl.tasks.spoken_digits import SpokenDigits, sounding

from .conftest import train_steps

SR = 22050


@pytest.fixture(scope="module")
def espeak() -> None:
    pytest.importorskip("espeakng_loader", reason='needs eSpeak NG: pip install "ostl[speech]"')


def _tone(
    freq: float,
    start: float,
    stop: float,
    amp: float = 0.5,
    ramp: float = 0.02,
    length: float = 1.0,
) -> np.ndarray:
    """A sine of ``freq`` Hz between ``start`` and ``stop`` s of a ``length`` s signal, with
    raised-cosine ramps (an abrupt start would be a click, which excites every channel)."""
    t = np.arange(round(length * SR)) / SR
    env = np.clip(np.minimum((t - start) / ramp, (stop - t) / ramp), 0, 1)
    return amp * np.sin(2 * np.pi * freq * t) * (0.5 - 0.5 * np.cos(np.pi * env))


def _edges(channels: int = 64) -> np.ndarray:
    """Channel k spans edges[k]..edges[k + 2] (Hz) and peaks at edges[k + 1]."""
    return mel_to_hz(np.linspace(hz_to_mel(50.0), hz_to_mel(8000.0), channels + 2))


# --- synthesis ------------------------------------------------------------------------------


def test_a_word_is_about_half_a_second_of_int16_audio_at_22050_hz(espeak: None) -> None:
    from ostl.tasks.audio.synth import SAMPLE_RATE, synthesize

    audio = synthesize("seven")
    assert SAMPLE_RATE == 22050 and audio.dtype == np.int16 and audio.ndim == 1
    loud = np.flatnonzero(np.abs(audio.astype(np.int32)) > 300)
    assert 0.3 <= len(audio) / SAMPLE_RATE <= 1.0
    assert (loud[-1] - loud[0]) / SAMPLE_RATE >= 0.25  # sound, not a click
    assert np.abs(audio).max() > 3000


def test_the_same_call_gives_the_same_samples_whatever_came_before(espeak: None) -> None:
    from ostl.tasks.audio.synth import Voice, synthesize

    voice = Voice("en-us", "f2", rate=160, pitch=60, range=40)  # f2: with breath noise
    first = synthesize("three", voice)
    synthesize("seven", Voice("en-gb-scotland", "m3"))  # eSpeak keeps state between calls
    time.sleep(1.1)  # and seeds its noise with the clock (in seconds)
    assert np.array_equal(synthesize("three", voice), first)
    assert not np.array_equal(synthesize("three", voice, seed=1), first)


def test_voices_accents_and_rates_give_different_audio(espeak: None) -> None:
    from ostl.tasks.audio.synth import Voice, synthesize

    base = synthesize("nine", Voice("en", "m1"))
    for other in (Voice("en", "f3"), Voice("en-us", "m1"), Voice("en", "m1", pitch=80)):
        audio = synthesize("nine", other)
        n = min(len(audio), len(base))
        assert not np.array_equal(audio[:n], base[:n]), other
    fast, slow = synthesize("nine", Voice(rate=300)), synthesize("nine", Voice(rate=100))
    assert len(slow) > 1.5 * len(fast)


def _synthesize_in_child(word: str) -> bytes:
    from ostl.tasks.audio.synth import Voice, synthesize

    return synthesize(word, Voice("en-029", "m4")).tobytes()


@pytest.mark.skipif(sys.platform != "linux", reason="forks worker processes")
def test_processes_synthesise_at_once_and_agree(espeak: None) -> None:
    from ostl.tasks.audio.synth import Voice, synthesize

    here = synthesize("four", Voice("en-029", "m4")).tobytes()
    with multiprocessing.get_context("fork").Pool(2) as pool:
        there = pool.map(_synthesize_in_child, ["four"] * 4)
    assert all(t == here for t in there)


def test_the_chosen_variants_exist_and_bad_voices_are_refused(espeak: None) -> None:
    from ostl.tasks.audio.synth import VARIANTS, Voice, available_variants, synthesize

    assert set(VARIANTS) <= set(available_variants())
    with pytest.raises(OptionError, match="no voice variant 'nope'"):
        synthesize("one", Voice("en", "nope"))
    with pytest.raises(OptionError, match="no voice 'xx-nope'"):
        synthesize("one", Voice("xx-nope"))
    with pytest.raises(OptionError, match="rate must be in 80..450"):
        Voice(rate=20)
    with pytest.raises(OptionError, match="pitch must be an integer"):
        Voice(pitch=50.5)  # type: ignore[arg-type]
    with pytest.raises(OptionError, match="non-empty"):
        synthesize("  ")
    with pytest.raises(OptionError, match="seed"):
        synthesize("one", seed=-1)


def test_without_espeak_the_error_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "espeakng_loader", None)  # import fails as if absent
    monkeypatch.setenv("OSTL_CACHE", str(tmp_path))
    from ostl.tasks.audio.synth import synthesize

    with pytest.raises(MissingDependencyError, match=r'pip install "ostl\[speech\]"'):
        synthesize("one")
    with pytest.raises(MissingDependencyError, match=r'pip install "ostl\[speech\]"'):
        get_task("spoken-digits", speakers=3, repeats=1)


# --- the cochlea front end --------------------------------------------------------------------


@pytest.mark.parametrize("freq", [500.0, 1000.0, 4000.0])
def test_a_pure_tone_excites_the_channel_whose_band_holds_it(freq: float) -> None:
    spikes = Cochlea()(_tone(freq, 0.3, 0.7)[None])[:, 0]  # (steps, channels)
    assert spikes.shape == (100, 64) and spikes.dtype == torch.uint8
    edges = _edges()
    holds = int(np.flatnonzero((edges[:-2] <= freq) & (freq <= edges[2:]))[0])
    fired = spikes.sum(0).nonzero().flatten().tolist()
    assert holds in fired
    # The window's spectral leakage reaches the neighbours, but not half an octave away.
    assert all(edges[k] < 1.5 * freq and edges[k + 2] > freq / 1.5 for k in fired), fired


def test_silence_and_sound_below_the_floor_give_no_spikes() -> None:
    cochlea = Cochlea()
    quiet = 1e-5 * np.random.default_rng(0).standard_normal((2, SR))  # about -100 dB
    assert cochlea(np.zeros((3, SR))).sum() == 0
    assert cochlea(quiet).sum() == 0
    assert cochlea(_tone(1000, 0.3, 0.7, amp=1e-5)[None]).sum() == 0


def test_an_onset_spikes_at_its_time_and_a_steady_tone_stays_quiet() -> None:
    tone = _tone(1000, 0.5, 1.5, ramp=0.005, length=1.5)  # longer than the 1 s window
    spikes = Cochlea()(tone[None])[:, 0]
    steps = spikes.sum(1).nonzero().flatten().tolist()
    assert steps and 48 <= steps[0] <= 50  # the step of 0.5 s is 50 (10 ms steps)
    assert steps[-1] <= 52  # then the level stays, and the crop at 1 s is no click


def test_down_channels_spike_when_the_sound_stops() -> None:
    spikes = Cochlea(down=True)(_tone(1000, 0.3, 0.6)[None])[:, 0]
    assert spikes.shape == (100, 128)
    rises = spikes[:, :64].sum(1).nonzero().flatten()
    falls = spikes[:, 64:].sum(1).nonzero().flatten()
    assert 28 <= rises.min() <= 32  # the onset, at 0.3 s
    assert {58, 59} <= set(falls.tolist()) and falls.max() <= 64  # the offset, at 0.6 s
    assert spikes[33:58].sum() == 0  # nothing while the tone holds


def test_delta_spikes_by_hand() -> None:
    levels = torch.tensor([0.0, 2.5, 5.1, 5.1, 1.0, 7.0])
    up, down = delta_spikes(levels, threshold=2.0, start=0.0)
    # references: 0, 2, 4, 4, 2 (one fall of 2 dB from 4 to 1.0 leaves 2; a second needs 0),
    # then 7.0 is 2.5 thresholds above 2: two rises to 6
    assert up.tolist() == [0, 1, 1, 0, 0, 2]
    assert down.tolist() == [0, 0, 0, 0, 1, 0]
    with pytest.raises(OptionError, match="threshold"):
        delta_spikes(levels, threshold=0.0, start=0.0)


def test_frames_are_binned_into_steps() -> None:
    frames = torch.tensor([[1], [0], [2], [1], [0], [1]])  # (F=6, 1)
    times = torch.tensor([0.0, 0.1, 0.2, 0.55, 0.6, 1.0])  # the last is past the end
    out = bin_frames(frames, times, steps=4, duration=1.0)  # 0.25 s steps
    assert out.dtype == torch.uint8 and out.flatten().tolist() == [1, 0, 1, 0]


def test_mel_filters_rise_with_frequency_and_none_is_empty() -> None:
    fb = mel_filterbank(700, 1024, SR, 50.0, 8000.0)
    assert fb.shape == (700, 513) and bool((fb.sum(1) > 0).all())
    assert float(fb.max()) <= 1.0
    peaks = fb.argmax(1)
    assert bool((peaks[1:] >= peaks[:-1]).all()) and peaks[-1] > peaks[0]


def test_bad_waveforms_and_settings_are_refused() -> None:
    cochlea = Cochlea(channels=8, steps=10)
    with pytest.raises(ShapeError, match=r"\(N, S\)"):
        cochlea(np.zeros(SR))
    with pytest.raises(DTypeError, match="float"):
        cochlea(np.zeros((1, SR), dtype=np.int16))
    with pytest.raises(NonFiniteError):
        cochlea(np.full((1, SR), np.nan))
    with pytest.raises(OptionError, match="channels"):
        Cochlea(channels=0)
    with pytest.raises(OptionError, match="fmax"):
        Cochlea(fmax=20000.0)
    with pytest.raises(OptionError, match="hop"):
        Cochlea(steps=1000, hop=0.005)


# --- the task -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("ostl-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OSTL_CACHE", str(path))
        yield path


@pytest.fixture(scope="module")
def task(espeak: None, cache: Path) -> SpokenDigits:
    # Five speakers saying every digit once: about a second to make.
    return get_task("spoken-digits", speakers=5, repeats=1, steps=50, channels=16)


def test_batches_are_spikes_with_one_hot_targets_where_the_word_sounds(
    task: SpokenDigits,
) -> None:
    batch = next(task.train_batches(4, torch.Generator().manual_seed(0)))
    assert batch.xs.shape == (50, 4, 16) and batch.xs.dtype == torch.float32
    assert set(batch.xs.unique().tolist()) <= {0.0, 1.0} and batch.xs.sum() > 0
    assert isinstance(batch.targets, torch.Tensor) and batch.targets.shape == (50, 4, 10)
    assert batch.mask is not None and batch.mask.shape == (50, 4) and batch.reset
    assert torch.equal(batch.targets.sum(-1), batch.mask.float())  # one-hot or zero
    for b in range(4):
        on = batch.mask[:, b].nonzero().flatten()
        assert 5 <= len(on) < 50 and len(on) == on[-1] - on[0] + 1  # one stretch, not all
        assert batch.xs[on[0], b].sum() > 0 and batch.xs[on[-1], b].sum() > 0
        assert batch.xs[: on[0], b].sum() == 0 and batch.xs[on[-1] + 1 :, b].sum() == 0
    assert (task.n_in, task.n_out) == (16, 10)


def test_sounding_spans_first_to_last_spike_by_hand() -> None:
    spikes = torch.zeros(6, 3, 2, dtype=torch.uint8)
    spikes[1, 0, 0] = spikes[3, 0, 1] = 1  # steps 1..3
    spikes[5, 1, 1] = 1  # the last step only; sample 2 never spikes: every step counts
    assert sounding(spikes).T.tolist() == [
        [False, True, True, True, False, False],
        [False, False, False, False, False, True],
        [True] * 6,
    ]


def test_the_metric_ignores_the_silence(task: SpokenDigits) -> None:
    metric = task.metric()
    for batch in task.eval_batches("test", 4):
        assert batch.mask is not None and isinstance(batch.targets, torch.Tensor)
        labels = batch.targets.sum(0).argmax(-1)
        wrong = one_hot((labels + 1) % 10, 10).expand_as(batch.targets)  # another class
        ys = torch.where(batch.mask.unsqueeze(-1), batch.targets, 100 * wrong)
        assert (~batch.mask).any()  # there is silence, loud with the wrong class
        metric.update(ys, batch)
    assert metric.value() == 1.0


def test_splits_are_by_speaker_and_every_speaker_says_every_digit(task: SpokenDigits) -> None:
    speakers = {s: set(task.speakers_of(s).tolist()) for s in ("train", "valid", "test")}
    assert [len(speakers[s]) for s in ("train", "valid", "test")] == [3, 1, 1]
    assert not (speakers["train"] & speakers["test"] or speakers["train"] & speakers["valid"])
    assert speakers["valid"].isdisjoint(speakers["test"])
    assert set().union(*speakers.values()) == set(range(5)) and len(task.voices) == 5
    for split in ("train", "valid", "test"):
        spikes, labels = task.split(split)
        assert sorted(labels.tolist()) == sorted(list(range(10)) * len(speakers[split]))
        assert spikes.shape == (50, 10 * len(speakers[split]), 16)
        assert bool((spikes.sum((0, 2)) > 0).all())  # every utterance spikes


def test_the_data_is_cached_and_rebuilt_identically(
    task: SpokenDigits,
    cache: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert task.cache_path().parent == cache and task.cache_path().exists()
    monkeypatch.setattr("ostl.tasks.spoken_digits.synthesize", _no_synthesis)
    again = get_task("spoken-digits", speakers=5, repeats=1, steps=50, channels=16)
    assert torch.equal(again.split("test")[0], task.split("test")[0])  # from the cache
    monkeypatch.undo()
    monkeypatch.setenv("OSTL_CACHE", str(tmp_path))  # an empty cache: made afresh
    fresh = get_task("spoken-digits", speakers=5, repeats=1, steps=50, channels=16)
    assert "preparing spoken-digits data (one time, cached in" in capsys.readouterr().err
    for split in ("train", "valid", "test"):
        assert torch.equal(fresh.split(split)[0], task.split(split)[0])
        assert torch.equal(fresh.split(split)[1], task.split(split)[1])
    assert [p.name for p in tmp_path.iterdir()] == [fresh.cache_path().name]  # no temp file
    other = get_task("spoken-digits", speakers=5, repeats=1, steps=50, channels=16, data_seed=1)
    assert other.voices != task.voices


def _build_in_child(cache: str) -> bytes:
    os.environ["OSTL_CACHE"] = cache  # in the forked worker only
    task = get_task("spoken-digits", speakers=3, repeats=1, steps=10, channels=8)
    return task.split("train")[0].numpy().tobytes()


@pytest.mark.skipif(sys.platform != "linux", reason="forks worker processes")
def test_two_processes_building_the_same_data_at_once_agree(espeak: None, tmp_path: Path) -> None:
    with multiprocessing.get_context("fork").Pool(2) as pool:
        built = pool.map(_build_in_child, [str(tmp_path)] * 2)
    assert built[0] == built[1]
    assert len(list(tmp_path.iterdir())) == 1  # one cache file, no temporary file left


def _no_synthesis(*args: object) -> None:
    raise AssertionError("the cached data should have been used")


def test_sizes_limit_the_splits_and_eval_batches_are_fixed(task: SpokenDigits) -> None:
    small = get_task(
        "spoken-digits", speakers=5, repeats=1, steps=50, channels=16, train_size=7, test_size=4
    )
    assert [small.split_size(s) for s in ("train", "valid", "test")] == [7, 4, 4]
    assert small.num_train_batches(3) == 3
    a = torch.cat([b.xs for b in task.eval_batches("test", 3)], dim=1)
    b = torch.cat([b.xs for b in task.eval_batches("test", 4)], dim=1)
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="split"):
        next(task.eval_batches("train", 4))


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"speakers": 2}, "speakers must be an integer >= 3"),
        ({"steps": 0}, "steps must be an integer >= 1"),
        ({"channels": 1.5}, "channels must be an integer"),
        ({"threshold": -1.0}, "threshold must be"),
        ({"train_size": 0}, "train_size must be a positive integer"),
    ],
)
def test_bad_options_are_refused_before_any_work(options: dict[str, object], match: str) -> None:
    with pytest.raises(OptionError, match=match):
        get_task("spoken-digits", **options)


def test_the_default_network_trains_with_every_rule(task: SpokenDigits, rule: str) -> None:
    net = task.network()
    assert (net.n_in, net.n_out) == (16, 10)
    train_steps(task, rule, batches=1)


@pytest.mark.slow
def test_the_default_data_has_150_speakers_and_3000_utterances(espeak: None) -> None:
    """The default data set (about half a minute to make when not cached)."""
    full = get_task("spoken-digits")
    sizes = [full.split_size(s) for s in ("train", "valid", "test")]
    assert sizes == [2100, 300, 600]
    assert full.split("train")[0].shape == (50, 2100, 64)

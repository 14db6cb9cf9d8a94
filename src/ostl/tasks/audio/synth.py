"""Offline speech synthesis with eSpeak NG, for tasks that make their own spoken words.

eSpeak NG (a formant synthesiser) comes with the ``espeakng-loader`` wheel, which ships the
library ``libespeak-ng`` and its data (voices, dictionaries); install it with
``pip install "ostl[speech]"``. Nothing is downloaded. The library is driven through its C API
(``speak_lib.h``) with :mod:`ctypes`, in synchronous mode: the samples (int16, mono, 22,050 Hz)
arrive through a callback while :func:`synthesize` waits.

A voice (:class:`Voice`) is an English accent of the data (``en``, ``en-us``,
``en-gb-scotland``, ...), an optional voice variant (a file of ``espeak-ng-data/voices/!v``:
``m3``, ``f2``, ``klatt``, ...) and the speaking rate, pitch and pitch range.

Determinism: the same text, voice and seed give the same samples, in any process, at any time
and whatever was synthesised before. The library keeps hidden state from one utterance to the
next (the phase of its pitch "flutter", the voicing cycle) and seeds its noise generator with
the clock, so every call loads a private copy of the library afresh, seeds it, synthesises, and
unloads it again (a few milliseconds). Calls within a process are serialised by a lock;
separate processes (e.g. test workers) each load their own copy.
"""

from __future__ import annotations

import _ctypes
import atexit
import ctypes
import functools
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from ...errors import OptionError
from ..data import MissingDependencyError

__all__ = [
    "SAMPLE_RATE",
    "ACCENTS",
    "VARIANTS",
    "Voice",
    "SynthesisError",
    "synthesize",
    "available_variants",
    "espeak",
]

#: Sample rate of eSpeak NG's output (Hz); checked against the library at every call.
SAMPLE_RATE = 22050

#: The English accents of eSpeak NG's data (its language files ``lang/gmw/en*``).
ACCENTS = (
    "en",
    "en-us",
    "en-029",
    "en-gb-scotland",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
    "en-gb-x-rp",
    "en-us-nyc",
)

#: Voice variants that sound like people (the robot, whisper and effect variants are left out).
VARIANTS = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5",
    "klatt", "klatt2", "klatt3", "Alex", "Alicia", "Andy", "Annie", "Denis", "Gene", "Jacky",
    "Lee", "Michael", "Mike", "anika", "aunty", "belinda", "benjamin", "boris", "david", "ed",
    "edward", "grandma", "grandpa", "ian", "john", "linda", "max", "paul", "quincy", "rob",
    "robert", "shelby", "steph", "travis", "victor",
)  # fmt: skip

# speak_lib.h
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000  # return an error instead of calling exit()
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_EE_OK, _EE_NOT_FOUND = 0, 2
_RATE, _PITCH, _RANGE = 1, 3, 4  # espeak_PARAMETER
_RATE_LIMITS, _PITCH_LIMITS = (80, 450), (0, 99)

# int callback(short *wav, int numsamples, espeak_EVENT *events): 0 continues synthesis.
_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class SynthesisError(RuntimeError):
    """eSpeak NG failed (it could not start, or refused to synthesise)."""


@dataclass(frozen=True)
class Voice:
    """A synthetic speaker.

    Attributes:
        accent: an English accent of eSpeak NG (one of :data:`ACCENTS`, or any language name
            the data holds).
        variant: a voice variant (a file name of ``espeak-ng-data/voices/!v``, e.g. ``"f2"``),
            or None for the accent's own voice.
        rate: speaking rate in words per minute (80–450; eSpeak's default is 175).
        pitch: base pitch (0–99; default 50).
        range: pitch range (0–99; 0 is monotone, default 50).
    """

    accent: str = "en"
    variant: str | None = None
    rate: int = 175
    pitch: int = 50
    range: int = 50

    def __post_init__(self) -> None:
        for name, value, (lo, hi) in (
            ("rate", self.rate, _RATE_LIMITS),
            ("pitch", self.pitch, _PITCH_LIMITS),
            ("range", self.range, _PITCH_LIMITS),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise OptionError(f"voice {name} must be an integer, got {value!r}")
            if not lo <= value <= hi:
                raise OptionError(f"voice {name} must be in {lo}..{hi}, got {value}")
        if not isinstance(self.accent, str) or not self.accent or "+" in self.accent:
            raise OptionError(
                f"voice accent must be a language name such as 'en-us', got {self.accent!r}"
            )
        if self.variant is not None and (not isinstance(self.variant, str) or not self.variant):
            raise OptionError(f"voice variant must be a variant name or None, got {self.variant!r}")

    @property
    def name(self) -> str:
        """eSpeak's name of the voice: ``accent`` or ``accent+variant``."""
        return self.accent if self.variant is None else f"{self.accent}+{self.variant}"


def espeak() -> ModuleType:
    """The ``espeakng_loader`` module, or :class:`MissingDependencyError` saying how to get it."""
    try:
        import espeakng_loader
    except ImportError:
        raise MissingDependencyError(
            "speech synthesis needs eSpeak NG from the package 'espeakng-loader', which is not "
            'installed: run `pip install "ostl[speech]"`'
        ) from None
    return espeakng_loader


@functools.lru_cache(maxsize=1)
def available_variants() -> tuple[str, ...]:
    """Every voice variant in the installed eSpeak NG data, sorted."""
    folder = Path(espeak().get_data_path()) / "voices" / "!v"
    return tuple(sorted(p.name for p in folder.iterdir() if p.is_file()))


class _Library:
    """Loads, drives and unloads a private copy of ``libespeak-ng`` (one per process)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.copy: Path | None = None
        self.chunks: list[np.ndarray] = []
        self.callback = _CALLBACK(self._collect)  # kept alive as long as the object

    def _collect(self, wav: Any, n: int, events: Any) -> int:
        if wav and n > 0:
            self.chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0

    def _private_copy(self) -> Path:
        # A private file, so that no other user of the library in this process shares (and
        # keeps loaded) the instance whose state this module resets by reloading it.
        # A forked child uses its parent's copy while that exists (nothing is loaded between
        # two calls, so there is no state to share).
        if self.copy is None or not self.copy.exists():
            source = Path(espeak().get_library_path())
            folder = Path(tempfile.mkdtemp(prefix="ostl-espeak-"))
            atexit.register(shutil.rmtree, folder, True)
            self.copy = folder / source.name
            shutil.copyfile(source, self.copy)
        return self.copy

    def run(self, text: bytes, voice: Voice, seed: int) -> np.ndarray:
        """The samples of ``text`` (UTF-8, NUL-terminated) spoken by ``voice``."""
        with self.lock:
            data = os.fsencode(espeak().get_data_path())
            lib = ctypes.CDLL(str(self._private_copy()))
            try:
                lib.espeak_Initialize.argtypes = [
                    ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int
                ]  # fmt: skip
                rate = lib.espeak_Initialize(
                    _AUDIO_OUTPUT_SYNCHRONOUS, 0, data, _INITIALIZE_DONT_EXIT
                )
                if rate != SAMPLE_RATE:
                    raise SynthesisError(
                        f"eSpeak NG did not start (espeak_Initialize returned {rate}, expected "
                        f"the sample rate {SAMPLE_RATE}); data folder: {os.fsdecode(data)}"
                    )
                self.chunks = []
                lib.espeak_SetSynthCallback(self.callback)
                # eSpeak seeds its noise (breathy voices) with the clock when it starts.
                if not hasattr(lib, "espeak_ng_SetRandSeed"):
                    raise SynthesisError(
                        "this eSpeak NG has no espeak_ng_SetRandSeed (version 1.52 or later "
                        "has): its breathy voices would change from run to run"
                    )
                lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
                lib.espeak_ng_SetRandSeed(seed)
                return self._speak(lib, text, voice)
            finally:
                lib.espeak_Terminate()
                _unload(lib)

    def _speak(self, lib: ctypes.CDLL, text: bytes, voice: Voice) -> np.ndarray:
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        status = lib.espeak_SetVoiceByName(voice.name.encode())
        if status == _EE_NOT_FOUND:
            raise OptionError(
                f"eSpeak NG has no voice {voice.name!r}: expected an accent such as "
                f"{', '.join(ACCENTS[:3])} and a variant of available_variants()"
            )
        if status != _EE_OK:
            raise SynthesisError(f"espeak_SetVoiceByName({voice.name!r}) returned {status}")
        for parameter, value in ((_RATE, voice.rate), (_PITCH, voice.pitch), (_RANGE, voice.range)):
            lib.espeak_SetParameter(parameter, int(value), 0)
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
            ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]  # fmt: skip
        status = lib.espeak_Synth(text, len(text), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        if status != _EE_OK:
            raise SynthesisError(f"espeak_Synth returned {status} for voice {voice.name!r}")
        lib.espeak_Synchronize()
        if not self.chunks:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(self.chunks).astype(np.int16, copy=False)


def _unload(lib: ctypes.CDLL) -> None:
    """Unload the library, so that the next load starts from its initial state."""
    close = getattr(_ctypes, "dlclose", None) or getattr(_ctypes, "FreeLibrary", None)
    if close is not None:
        close(lib._handle)


_LIBRARY = _Library()


def synthesize(text: str, voice: Voice | None = None, seed: int = 0) -> np.ndarray:
    """``text`` spoken by ``voice`` (default: ``Voice()``, eSpeak's British English voice).

    Args:
        text: what to say (plain text, e.g. ``"seven"``).
        voice: the speaker.
        seed: seed of eSpeak's noise generator (the breath noise of some voice variants).

    Returns:
        int16 samples (n,) at :data:`SAMPLE_RATE` Hz; a word lasts about 0.3–1 s (with a few
        milliseconds of silence at either end).

    Raises:
        MissingDependencyError: ``espeakng-loader`` is not installed.
        OptionError: empty text, or a voice eSpeak NG does not have.
        SynthesisError: the library failed.
    """
    if not isinstance(text, str) or not text.strip():
        raise OptionError(f"text to synthesise must be a non-empty string, got {text!r}")
    if "\0" in text:
        raise OptionError("text to synthesise must not contain NUL characters")
    voice = Voice() if voice is None else voice
    if not isinstance(voice, Voice):
        raise OptionError(f"voice must be a Voice, got {type(voice).__name__}")
    if voice.variant is not None and voice.variant not in available_variants():
        # eSpeak NG would silently fall back to the accent's own voice.
        raise OptionError(
            f"eSpeak NG has no voice variant {voice.variant!r}: expected one of "
            f"available_variants(), e.g. {', '.join(VARIANTS[:4])}"
        )
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise OptionError(f"seed must be a non-negative integer, got {seed!r}")
    return _LIBRARY.run(text.encode("utf-8") + b"\0", voice, int(seed))

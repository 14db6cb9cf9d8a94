"""weather: Seattle's weather, one day (or hour) at a time, predict the next.

Data: the CSV files that the ``vega_datasets`` package (0.9.0) ships; ostl reads the file from
the installed package's folder and never imports the package (its code needs pandas, which ostl
does not). Install it with ``pip install --no-deps vega_datasets==0.9.0`` (``make install``
does), or ``pip install "ostl[streams]"`` (which also brings pandas). Nothing is downloaded.

- ``series="daily"`` (default): ``seattle-weather.csv``, the 1,461 days of 2012–2015 (date,
  precipitation in mm, daily maximum and minimum temperature in °C, wind in m/s, and a weather
  word that is not used). Step t's inputs: day t's [temp_max, temp_min, log(1 + precipitation),
  wind], standardised, and the day of the year as (sin, cos) of 2π·day/365.25 (6 inputs).
  Target: day t + 1's four standardised variables (4 outputs). 1,460 steps.
- ``series="hourly"``: ``seattle-temps.csv``, the hourly temperature (°F) of 2010: 8,759
  readings (the hour skipped when clocks went forward, 14 March 02:00, is missing; the readings
  are taken as consecutive). Inputs: the hour's temperature as (T − 50 °F) / 10 °F, the hour of
  the day and the day of the year as (sin, cos) pairs (5 inputs). Target: the next hour's
  scaled temperature (1 output). 8,758 steps.

No future statistics: the daily variables are standardised with the mean and standard
deviation of the *first year* of the series (2012; :meth:`Weather.scaling`), never with those of
the whole series, which would tell the stream's start about its end. (The first year's steps
do see their own year's statistics: the one compromise, documented.) The hourly temperature is
scaled by the fixed constants above. Seasons change slowly, so ``drifts`` is empty.

Loss: mean squared error; metric: squared error averaged over the outputs. Predicting 0 (the
first year's mean) scores about 1.06 on the daily series; predicting that tomorrow is today
about 0.64 (0.17 for the temperatures, 1.1 for rain and wind).

Default network: LSTM(32) without recurrent weights (each unit's cell is its memory), Adam's
learning rate 0.003.
"""

from __future__ import annotations

import csv
import datetime as dt
import importlib.util
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from ..errors import OptionError
from ..losses import LossFn
from ..tasks.data import MissingDependencyError
from ..tasks.losses import mse
from .base import StreamDefaults
from .source import Source, check_int, squared_error

__all__ = ["Weather", "vega_folder", "weather_file", "read_daily", "read_hourly", "VARIABLES"]

#: The CSV file of each series, in the package's ``_data`` folder.
FILES = {"daily": "seattle-weather.csv", "hourly": "seattle-temps.csv"}
#: The daily variables, in the order of the inputs and targets (precipitation as log1p).
VARIABLES = ("temp_max", "temp_min", "precipitation", "wind")
#: The hourly temperature's fixed scaling: (T - HOURLY_CENTRE) / HOURLY_SCALE, in °F.
HOURLY_CENTRE, HOURLY_SCALE = 50.0, 10.0
_INSTALL = "`make install`, or `pip install --no-deps vega_datasets==0.9.0`"


def vega_folder() -> Path | None:
    """The data folder of the installed ``vega_datasets`` package (found, never imported), or
    None when it is not installed."""
    try:
        spec = importlib.util.find_spec("vega_datasets")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    return Path(spec.origin).parent / "_data"


def weather_file(series: str) -> Path:
    """The CSV file of ``series`` ("daily" or "hourly").

    Raises:
        MissingDependencyError: vega_datasets is not installed (or lacks the file).
    """
    folder = vega_folder()
    path = folder / FILES[series] if folder is not None else None
    if path is None or not path.is_file():
        raise MissingDependencyError(
            f"the weather stream needs the package 'vega_datasets' (it ships {FILES[series]}), "
            f"which is not installed: run {_INSTALL} (ostl only reads its CSV file)"
        )
    return path


@lru_cache(maxsize=4)
def read_daily(path: Path) -> tuple[tuple[dt.date, ...], np.ndarray]:
    """The dates and the (days, 4) float64 raw variables of :data:`VARIABLES` (precipitation
    in mm, not yet log1p) of a ``seattle-weather.csv`` file."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    dates = tuple(dt.date.fromisoformat(r["date"].replace("/", "-")) for r in rows)
    values = np.array([[float(r[k]) for k in VARIABLES] for r in rows], dtype=np.float64)
    return dates, values


@lru_cache(maxsize=4)
def read_hourly(path: Path) -> tuple[tuple[dt.datetime, ...], np.ndarray]:
    """The times and the (hours,) float64 temperatures (°F) of a ``seattle-temps.csv`` file."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    times = tuple(dt.datetime.fromisoformat(r["date"].replace("/", "-")) for r in rows)
    return times, np.array([float(r["temp"]) for r in rows], dtype=np.float64)


def _cycle(fraction: np.ndarray) -> np.ndarray:
    """(N, 2): sin and cos of 2π·fraction."""
    angle = 2 * math.pi * fraction
    return np.stack([np.sin(angle), np.cos(angle)], axis=1)


def _day_of_year(dates: tuple[dt.date, ...]) -> np.ndarray:
    return np.array([d.timetuple().tm_yday for d in dates], dtype=np.float64) / 365.25


@dataclass
class Weather(Source):
    """Seattle's weather, predict the next day (or hour); see the module docstring.

    Args:
        series: "daily" (2012–2015, four variables) or "hourly" (2010, temperature).
        steps: use only the first ``steps`` steps (None: the whole series).
    """

    name = "weather"
    summary = "Seattle weather (vega_datasets), next-day temperatures, rain and wind (MSE)"
    kind = "regression"
    metric = "squared error"
    defaults = StreamDefaults(cell="lstm", hidden=(32,), lr=3e-3)

    series: Literal["daily", "hourly"] = "daily"
    steps: int | None = None
    _x: Tensor = field(init=False, repr=False, compare=False)
    _y: Tensor = field(init=False, repr=False, compare=False)
    _mean: np.ndarray = field(init=False, repr=False, compare=False)
    _std: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.series not in FILES:
            raise OptionError(
                f"weather: series must be one of {', '.join(FILES)}, got {self.series!r}"
            )
        check_int(self.name, "steps", self.steps, 1, none=True)
        x, y = self._daily() if self.series == "daily" else self._hourly()
        n = len(y) if self.steps is None else min(self.steps, len(y))
        self._x = torch.from_numpy(x[:n]).float()
        self._y = torch.from_numpy(y[:n]).float()

    def _daily(self) -> tuple[np.ndarray, np.ndarray]:
        dates, raw = read_daily(weather_file("daily"))
        values = raw.copy()
        values[:, 2] = np.log1p(values[:, 2])
        first = np.array([d.year == dates[0].year for d in dates])
        self._mean, self._std = values[first].mean(0), values[first].std(0)
        z = (values - self._mean) / self._std
        x = np.concatenate([z, _cycle(_day_of_year(dates))], axis=1)
        return x[:-1], z[1:]

    def _hourly(self) -> tuple[np.ndarray, np.ndarray]:
        times, temp = read_hourly(weather_file("hourly"))
        self._mean, self._std = np.array([HOURLY_CENTRE]), np.array([HOURLY_SCALE])
        z = ((temp - HOURLY_CENTRE) / HOURLY_SCALE)[:, None]
        hour = np.array([t.hour for t in times], dtype=np.float64) / 24
        x = np.concatenate([z, _cycle(hour), _cycle(_day_of_year(times))], axis=1)
        return x[:-1], z[1:]

    def scaling(self) -> tuple[Tensor, Tensor]:
        """The (mean, standard deviation) of each target variable that the stream subtracts
        and divides by (float64): the first year's for the daily series, the fixed constants for
        the hourly one. Precipitation's are those of log(1 + mm)."""
        return torch.from_numpy(self._mean.copy()), torch.from_numpy(self._std.copy())

    @property
    def n_in(self) -> int:
        return self._x.shape[1]

    @property
    def n_out(self) -> int:
        return self._y.shape[1]

    @property
    def length(self) -> int:
        return len(self._y)

    @property
    def loss_fn(self) -> LossFn:
        return mse

    def error(self, y: Tensor, target: Tensor) -> Tensor:
        return squared_error(y, target, self.n_out)

    def window(self, start: int, stop: int, seed: int = 0) -> tuple[Tensor, Tensor]:
        self._check_window(start, stop)
        return self._x[start:stop], self._y[start:stop]

"""Synaptic weights on simulated phase-change-memory (PCM) crossbars, with IBM's aihwkit.

Hardware is a transformation of the synapses: :func:`map_network` puts every weight
matrix of a :class:`~ostl.Network` (each Layer's ``W`` and ``H``, the Readout's ``W``) on a
:class:`PCMCrossbar` and sets the layer's ``synapses`` hook, so the matrix-vector products of the
forward pass run through the crossbar while cells and rules stay unchanged. Biases and the
cells' per-neuron parameters (thresholds, decays) stay digital (peripheral circuits).

Device model (per weight, a differential pair of PCM devices, conductances in µS)::

    w = w_max · (g⁺ - g⁻) / g_max          g± ∈ [0, g_max]

- programming noise: every write (a full write or an increment) draws aihwkit's
  ``PCMLikeNoiseModel.apply_programming_noise_to_conductance`` at the target conductance
  (σ = c0 + c1·g/g_max + c2·(g/g_max)², from PCM measurements, Nandakumar et al. 2019);
- drift and read noise: ``generate_drift_coefficients`` (ν per device) and
  ``apply_drift_noise_to_conductance`` (g·(t/t0)^-ν plus accumulated 1/f read noise) at an
  inference time t after programming (:meth:`PCMCrossbar.drift_to`);
- global drift compensation: aihwkit's ``GlobalDriftCompensation`` (one scale α per crossbar,
  measured with a one-hot read-out after drift against the baseline taken at programming);
- DAC/ADC: the MVM itself runs in aihwkit's ``TorchInferenceTile`` with its ``IOParameters``
  (input quantisation ``inp_res``, output noise ``out_noise``, output quantisation ``out_res``,
  bounds and noise/bound management) on the normalised conductances (g⁺ - g⁻)/g_max.

The simulation runs on the CPU: a network on another device is refused when it is mapped.

Not simulated: tiling into 256×256 arrays (each matrix is one crossbar, however large),
device-to-device variation of g_max, conductance saturation effects beyond clipping, IR drop,
and drift *during* training (devices drift only after training, from t = 0 at its end).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import UnsupportedError
from ..layer import Layer, Network, Readout

__all__ = [
    "PCMConfig",
    "PCMCrossbar",
    "AnalogSynapses",
    "map_network",
    "unmap_network",
    "crossbars",
    "drift_network",
    "require_aihwkit",
]


def require_aihwkit() -> Any:
    """Import aihwkit or raise an ImportError saying how to install it without another torch."""
    try:
        import aihwkit  # noqa: F401
        from aihwkit.simulator.configs import TorchInferenceRPUConfig  # noqa: F401
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "ostl.hardware needs IBM's aihwkit: pip install --no-deps aihwkit==1.1.0 "
            "scipy requests protobuf (never a plain `pip install aihwkit`: it pulls a CUDA "
            "torch). `make install` does it."
        ) from e
    return aihwkit


@dataclass(frozen=True)
class PCMConfig:
    """Every option of the simulated PCM hardware, noise sources each switchable.

    Attributes:
        g_max: maximal device conductance (µS); also aihwkit's PCM model's g_max.
        headroom: the weight range w_max is ``headroom · max|W|`` at mapping time (room for
            the weights to grow during online learning; weights beyond it clip). With 1.5,
            OSTTP's weights clipped and its digits accuracy fell from 0.86 to 0.57 (4 epochs,
            ``docs/hardware.md``); 4 is the default. Programming trained weights once
            (``pcm_update="offline"``) uses 1: they will not grow.
        prog_noise: scale of the PCM programming noise (0: writes are exact).
        read_noise: scale of the 1/f read noise accumulated up to the inference time (0: off).
        drift: scale of the drift exponents ν (0: no drift).
        compensation: global drift compensation (aihwkit ``GlobalDriftCompensation``).
        inp_bits: DAC resolution of the inputs (0: no input quantisation).
        out_bits: ADC resolution of the outputs (0: no output quantisation).
        out_noise: additive Gaussian noise of each MVM output, relative to a full-range
            column (aihwkit's ``out_noise``; its default is 0.06).
        ideal_io: bypass the tile's periphery entirely (an exact matrix product).
        granularity: the device granularity ε of the mixed-precision scheme, in µS: a device is
            programmed only when its accumulated change reaches ε.
    """

    g_max: float = 25.0
    headroom: float = 4.0
    prog_noise: float = 1.0
    read_noise: float = 1.0
    drift: float = 1.0
    compensation: bool = True
    inp_bits: int = 8
    out_bits: int = 10
    out_noise: float = 0.02
    ideal_io: bool = False
    granularity: float = 0.5

    def __post_init__(self) -> None:
        for name in ("g_max", "headroom", "granularity"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and 0 < v < math.inf):
                raise ValueError(f"PCMConfig: {name} must be a positive number, got {v!r}")
        for name in ("prog_noise", "read_noise", "drift", "out_noise"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and 0 <= v < math.inf):
                raise ValueError(f"PCMConfig: {name} must be >= 0, got {v!r}")
        for name in ("inp_bits", "out_bits"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= 24:
                raise ValueError(f"PCMConfig: {name} must be an int in [0, 24], got {v!r}")

    @classmethod
    def noiseless(cls, quantised: bool = True, **kwargs: Any) -> PCMConfig:
        """All noise and drift off; DAC/ADC quantisation kept unless ``quantised=False``."""
        base = cls(prog_noise=0.0, read_noise=0.0, drift=0.0, out_noise=0.0, compensation=False)
        if not quantised:
            base = replace(base, ideal_io=True, inp_bits=0, out_bits=0)
        return replace(base, **kwargs)

    def rpu_config(self) -> Any:
        """aihwkit's ``TorchInferenceRPUConfig`` of the MVM: the periphery (DAC/ADC, noise)."""
        require_aihwkit()
        from aihwkit.inference import GlobalDriftCompensation, PCMLikeNoiseModel
        from aihwkit.simulator.configs import TorchInferenceRPUConfig
        from aihwkit.simulator.parameters import IOParameters

        rpu = TorchInferenceRPUConfig()
        if self.ideal_io:
            rpu.forward = IOParameters(is_perfect=True)
        else:
            rpu.forward = IOParameters(
                inp_res=1 / (2 ** (self.inp_bits - 1) - 1) if self.inp_bits else -1,
                out_res=1 / (2 ** (self.out_bits - 1) - 1) if self.out_bits else -1,
                out_noise=self.out_noise,
            )
        rpu.noise_model = PCMLikeNoiseModel(
            g_max=self.g_max,
            prog_noise_scale=self.prog_noise,
            read_noise_scale=self.read_noise,
            drift_scale=self.drift,
        )
        rpu.drift_compensation = GlobalDriftCompensation() if self.compensation else None
        return rpu


class PCMCrossbar:
    """One weight matrix (n_out, n_in) on differential pairs of PCM devices.

    Holds the programmed conductances ``g_pos``, ``g_neg`` (µS), the drift exponents of the
    devices and an aihwkit ``TorchInferenceTile`` that computes the MVM. Not an ``nn.Module``:
    nothing here enters the network's ``state_dict`` (the digital copy of the programmed weight
    is the layer's own parameter, see :mod:`ostl.hardware.update`).

    Args:
        weight: the weights to program (a full write of every device), on the CPU.
        config: the device and periphery options.
        w_max: the weight that maps to g_max (None: ``config.headroom · max|weight|``).
    """

    def __init__(self, weight: Tensor, config: PCMConfig, w_max: float | None = None) -> None:
        if weight.device.type != "cpu":
            raise UnsupportedError(
                f"PCM crossbars are simulated on the CPU, got weights on {weight.device}: "
                "map a network that is on the CPU (net.to('cpu'))"
            )
        require_aihwkit()
        self.config = config
        self.rpu = config.rpu_config()
        self.noise_model = self.rpu.noise_model
        w = weight.detach().to(torch.float32, copy=True)
        self.shape = tuple(w.shape)
        peak = float(w.abs().max()) if w.numel() else 0.0
        self.w_max = float(w_max) if w_max is not None else config.headroom * max(peak, 1e-3)
        self.tile = self.rpu.tile_class(self.shape[0], self.shape[1], self.rpu)
        self.rpu = self.tile.rpu_config  # the tile's own copy: what its forward reads
        self.tile.eval()  # is_test: no training-time weight modifiers, α applied
        self.g_pos = torch.zeros(self.shape)
        self.g_neg = torch.zeros(self.shape)
        self.nu_pos = torch.zeros(self.shape)
        self.nu_neg = torch.zeros(self.shape)
        self.t_inference: float | None = None
        self.writes = 0  # device writes so far (each device of a pair counts once)
        self.program(w)

    # -- conductances ----------------------------------------------------------------------
    @property
    def g_scale(self) -> float:
        """µS per unit weight."""
        return self.config.g_max / self.w_max

    def _write(self, g_target: Tensor) -> Tensor:
        """One write of each device to ``g_target``: aihwkit's PCM programming noise, clipped."""
        g = g_target.clamp(0.0, self.config.g_max)
        return self.noise_model.apply_programming_noise_to_conductance(g).clamp(
            0.0, self.config.g_max
        )

    @torch.no_grad()
    def program(self, weight: Tensor, mask: Tensor | None = None) -> int:
        """Full write of both devices of each pair to ``weight`` (where ``mask``): the number
        of pairs programmed (one programming event each)."""
        w = weight.detach().to(torch.float32).reshape(self.shape).clamp(-self.w_max, self.w_max)
        g = w * self.g_scale
        sel = torch.ones(self.shape, dtype=torch.bool) if mask is None else mask
        new_pos, new_neg = self._write(g.clamp(min=0)), self._write((-g).clamp(min=0))
        self.g_pos = torch.where(sel, new_pos, self.g_pos)
        self.g_neg = torch.where(sel, new_neg, self.g_neg)
        self.nu_pos = torch.where(sel, self._nu(self.g_pos), self.nu_pos)
        self.nu_neg = torch.where(sel, self._nu(self.g_neg), self.nu_neg)
        n = int(sel.sum())
        self.writes += 2 * n
        self._load()
        return n

    @torch.no_grad()
    def increment(self, delta: Tensor, mask: Tensor) -> int:
        """Add ``delta`` to the weights where ``mask``: one device write per pair (SET of g⁺ for
        a positive change, of g⁻ for a negative one), with programming noise. A device that
        would leave [0, g_max] is refreshed instead: the pair is rewritten to the new weight.
        Returns the number of pairs programmed."""
        dg = delta.detach().to(torch.float32).reshape(self.shape) * self.g_scale
        up = mask & (dg > 0)
        down = mask & (dg < 0)
        tgt_pos, tgt_neg = self.g_pos + dg, self.g_neg - dg
        over = (up & (tgt_pos > self.config.g_max)) | (down & (tgt_neg > self.config.g_max))
        up, down = up & ~over, down & ~over
        if up.any():
            self.g_pos = torch.where(up, self._write(tgt_pos), self.g_pos)
            self.nu_pos = torch.where(up, self._nu(self.g_pos), self.nu_pos)
        if down.any():
            self.g_neg = torch.where(down, self._write(tgt_neg), self.g_neg)
            self.nu_neg = torch.where(down, self._nu(self.g_neg), self.nu_neg)
        self.writes += int(up.sum() + down.sum())
        n = int(up.sum() + down.sum())
        if over.any():  # refresh: both devices rewritten (counts as one pair programmed)
            n += self.program(self.weight() + delta.reshape(self.shape), over)
        else:
            self._load()
        return n

    def _nu(self, g: Tensor) -> Tensor:
        return self.noise_model.generate_drift_coefficients(g)

    def weight(self) -> Tensor:
        """The programmed weight (at the end of programming: no drift, no read noise)."""
        return (self.g_pos - self.g_neg) / self.g_scale

    # -- the tile --------------------------------------------------------------------------
    def _load(self, g_pos: Tensor | None = None, g_neg: Tensor | None = None) -> None:
        """Put conductances on the tile, normalised to [-1, 1] (full range = g_max)."""
        gp = self.g_pos if g_pos is None else g_pos
        gn = self.g_neg if g_neg is None else g_neg
        self.tile.set_weights((gp - gn) / self.config.g_max)
        if g_pos is None:  # fresh programming: a new drift-compensation baseline, α = 1
            self.t_inference = None
            self._set_alpha(torch.ones(1))
            comp = self.rpu.drift_compensation
            self.baseline = None if comp is None else comp.init_baseline(self.tile)

    def _set_alpha(self, alpha: Tensor) -> None:
        self.tile.__dict__.pop("alpha", None)
        self.tile._buffers.pop("alpha", None)
        self.tile.alpha = alpha

    @torch.no_grad()
    def drift_to(self, t_inference: float | None) -> None:
        """Read the crossbar ``t_inference`` seconds after programming: aihwkit's PCM drift
        and accumulated read noise (a fresh draw), then global drift compensation if on.
        ``None`` returns to the freshly programmed conductances."""
        if t_inference is None:
            self._load()
            return
        if t_inference < 0:
            raise ValueError(f"t_inference must be >= 0 seconds, got {t_inference}")
        nm = self.noise_model
        gp = nm.apply_drift_noise_to_conductance(self.g_pos, self.nu_pos, float(t_inference))
        gn = nm.apply_drift_noise_to_conductance(self.g_neg, self.nu_neg, float(t_inference))
        self._load(gp, gn)
        self.t_inference = float(t_inference)
        comp = self.rpu.drift_compensation
        if comp is not None:
            out = self.tile._forward_drift_readout_tensor(reset_if=True)
            self._set_alpha(comp.apply(out, self.baseline).reshape(-1))

    @torch.no_grad()
    def mvm(self, x: Tensor) -> Tensor:
        """x (..., n_in) -> x @ Wᵀ (..., n_out) through the tile, in x's dtype.

        Not differentiable: the hardware has no backward pass through the crossbars (the
        online rules need none; BPTT trains in software, ``pcm_update="offline"``)."""
        lead = x.shape[:-1]
        y = self.tile(x.detach().reshape(-1, x.shape[-1]).to(torch.float32))
        return (y * self.w_max).reshape(*lead, self.shape[0]).to(x.dtype)


class AnalogSynapses:
    """A layer's ``synapses`` hook: the products ``x @ Wᵀ`` (and ``y @ Hᵀ``) on crossbars.

    A plain object (not an ``nn.Module``), so the network's ``state_dict`` keeps its keys.
    """

    def __init__(self, crossbars: dict[str, PCMCrossbar]) -> None:
        self.crossbars = crossbars

    def __call__(self, name: str, x: Tensor) -> Tensor:
        return self.crossbars[name].mvm(x)


def _matrices(layer: nn.Module) -> list[str]:
    if isinstance(layer, Layer):
        return ["W"] + (["H"] if layer.H is not None else [])
    return ["W"]


def map_network(net: Network, config: PCMConfig | None = None) -> dict[str, PCMCrossbar]:
    """Program every weight matrix of ``net`` onto PCM crossbars and route its forward pass
    through them. Returns the crossbars keyed like ``net.named_parameters()``
    (``"layers.0.W"``). The layer parameters are set to the programmed weights (the digital
    copy the online rules read; e.g. OSTL's transposed read of the readout)."""
    config = config or PCMConfig()
    out: dict[str, PCMCrossbar] = {}
    for i, layer in enumerate(net.typed_layers):
        assert isinstance(layer, Layer | Readout)
        xbars = {}
        for name in _matrices(layer):
            p = getattr(layer, name)
            xbar = PCMCrossbar(p, config)
            with torch.no_grad():
                p.copy_(xbar.weight().to(p.dtype))
            xbars[name] = out[f"layers.{i}.{name}"] = xbar
        layer.synapses = AnalogSynapses(xbars)
    return out


def unmap_network(net: Network) -> None:
    """Back to digital synapses (the parameters keep the last programmed weights)."""
    for layer in net.typed_layers:
        layer.synapses = None


def crossbars(net: Network) -> dict[str, PCMCrossbar]:
    """The crossbars of a mapped network, keyed like its parameters."""
    out: dict[str, PCMCrossbar] = {}
    for i, layer in enumerate(net.typed_layers):
        syn = layer.synapses
        if isinstance(syn, AnalogSynapses):
            out.update({f"layers.{i}.{k}": v for k, v in syn.crossbars.items()})
    return out


def drift_network(net: Network, t_inference: float | None, compensation: bool = True) -> None:
    """Read every crossbar of ``net`` at ``t_inference`` (see :meth:`PCMCrossbar.drift_to`),
    with or without global drift compensation."""
    for xbar in crossbars(net).values():
        comp_on = xbar.rpu.drift_compensation is not None
        if comp_on != compensation:
            from aihwkit.inference import GlobalDriftCompensation

            xbar.rpu.drift_compensation = GlobalDriftCompensation() if compensation else None
            xbar.drift_to(None)  # a new baseline for the new setting
        xbar.drift_to(t_inference)

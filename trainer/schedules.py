"""Noise schedules on torch tensors: the forward process x_t = alpha(t) x0 + sigma(t) eps.

The torch twin of `diffspec.reference.schedules`, same classes, names and serialised form, written for the
training step: every method takes a tensor of times (any shape, typically per-example t of shape (B,)) and
returns a tensor of the same dtype and device, with no host synchronisation and no Python branch on tensor
values. Python floats and numpy arrays are taken as float64; integer tensors become float32.

Times are not range-checked here (that would sync with the device every step): the loop draws them from
`timesteps`, and grids are checked where they are built (`grids`). Parameters are checked once, at
construction.

Numerics: VP schedules compute lam first and get (alpha, sigma) from log-sigmoids (`vp_alpha_sigma`), never
sqrt(1 - alphabar). The discrete schedules keep their log-alpha table in float64 and cast it to the dtype of t.
"""

import dataclasses
import math
from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar

import torch
import torch.nn.functional as F


def as_time(t):
    """t as a floating tensor: tensors keep their float dtype (integer tensors -> float32), anything else float64."""
    if isinstance(t, torch.Tensor):
        return t if t.is_floating_point() else t.to(torch.float32)
    return torch.as_tensor(t, dtype=torch.float64)


def vp_alpha_sigma(lam):
    """(alpha, sigma) of a variance-preserving process from its half log-SNR lam = log(alpha / sigma).

    alpha^2 = sigmoid(2 lam), sigma^2 = sigmoid(-2 lam), as log-sigmoids: sigma keeps full relative precision as
    alpha -> 1 (lam -> +inf) and alpha does as sigma -> 1 (lam -> -inf).
    """
    return torch.exp(0.5 * F.logsigmoid(2.0 * lam)), torch.exp(0.5 * F.logsigmoid(-2.0 * lam))


def _softplus(x):
    """log(1 + e^x) without the linearisation threshold of F.softplus: -logsigmoid(-x)."""
    return -F.logsigmoid(-x)


def _check(cond, message):
    if not cond:
        raise ValueError(message)


class _Schedule:
    """Shared plumbing: sigma_ve, its inverse, the clean-end test and the serialised form."""

    name: ClassVar[str]
    is_discrete: ClassVar[bool] = False
    variance_preserving: ClassVar[bool] = False

    def sigma_ve(self, t):
        """sigma / alpha = exp(-lam): the EDM / k-diffusion noise level."""
        return torch.exp(-self.lam(t))

    def t_of_sigma_ve(self, sigma_ve):
        """Inverse of `sigma_ve`."""
        return self.t_of_lam(-torch.log(as_time(sigma_ve)))

    def _held(self, t):
        """An inverse's result held inside [t_min, t_max] where it lands within rounding outside it (within 1e-12 of
        an end, relative to the domain's scale: t_of_lam(lam(t_max)) gave 1.0000000000000002 on some VP, sub-VP and
        VE schedules); a result further out is returned as it is. Two `torch.where`s: no host sync."""
        lo, hi = float(self.t_min), float(self.t_max)
        slack = 1e-12 * max(1.0, abs(lo), abs(hi))
        t = torch.where((t < lo) & (t >= lo - slack), lo, t)
        return torch.where((t > hi) & (t <= hi + slack), hi, t)

    def alpha_sigma_lam(self, t):
        """(alpha(t), sigma(t), lam(t)) of one time tensor: what a training step needs, each evaluated once."""
        return self.alpha(t), self.sigma(t), self.lam(t)

    def has_clean_end(self):
        """True when sigma(t_min) == 0, so a grid may end on the data itself."""
        return bool(self.sigma(torch.tensor(float(self.t_min), dtype=torch.float64)) == 0.0)

    def to_dict(self):
        d = {"name": self.name, **dataclasses.asdict(self)}
        if "values" in d:
            d["values"] = tuple(d["values"])
        return d


class _VP(_Schedule):
    """A variance-preserving schedule defined by its lam(t): (alpha, sigma) follow through `vp_alpha_sigma`."""

    variance_preserving: ClassVar[bool] = True

    def alpha(self, t):
        return vp_alpha_sigma(self.lam(t))[0]

    def sigma(self, t):
        return vp_alpha_sigma(self.lam(t))[1]

    def alpha_sigma_lam(self, t):
        """lam(t) once, then (alpha, sigma) from it: the same numbers as `alpha`, `sigma` and `lam` called apart."""
        lam = self.lam(t)
        alpha, sigma = vp_alpha_sigma(lam)
        return alpha, sigma, lam


class _ScoreSDEBeta:
    """Score-SDE's linear beta(t) (fields beta_min, beta_max of the subclass): B(t) = beta_min t + (beta_max -
    beta_min) t^2 / 2 and its inverse t = 2B / (beta_min + sqrt(beta_min^2 + 2 (beta_max - beta_min) B))."""

    def __post_init__(self):
        _check_beta_range(self.beta_min, self.beta_max)

    def int_beta(self, t):
        t = as_time(t)
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2

    def t_of_int_beta(self, B):
        d = self.beta_max - self.beta_min
        return 2.0 * B / (self.beta_min + torch.sqrt(self.beta_min**2 + 2.0 * d * B))

    def log_int_beta(self, t):
        """log B(t) = log t + log(beta_min + (beta_max - beta_min) t / 2), finite where B(t) itself underflows (a
        float32 t below ~1e-38 gives B = 0, while log B and the sigma it sets, ~sqrt(B), are representable)."""
        t = as_time(t)
        return torch.log(t) + torch.log(self.beta_min + 0.5 * (self.beta_max - self.beta_min) * t)

    def log_expm1_int_beta(self, t, sign=1.0):
        """log(expm1(B)) (sign 1) or log(-expm1(-B)) (sign -1) without underflow at small B or overflow at large B:
        log B + log(expm1(sign B) / (sign B)) below B = 1, B + log1p(-e^{-B}) or log1p(-e^{-B}) above."""
        B = self.int_beta(t)
        small = B < 1.0
        Bs = torch.where(small & (B > 0), B, torch.ones_like(B))  # the ratio's argument, kept away from 0 and large
        ratio = torch.where(B > 0, torch.expm1(sign * Bs) / (sign * Bs), torch.ones_like(B))
        Bl = torch.where(small, torch.ones_like(B), B)
        large = torch.log1p(-torch.exp(-Bl)) + (Bl if sign > 0 else 0.0)
        return torch.where(small, self.log_int_beta(t) + torch.log(ratio), large)


# --------------------------------------------------------------------------------------------------------
# Discrete-time VP (DDPM): betas over T steps.
# --------------------------------------------------------------------------------------------------------


def rescale_zero_terminal_snr(betas):
    """Betas whose last alphabar is exactly 0 (Lin et al. 2023, Algorithm 1): sqrt(alphabar) shifted so its last
    value is 0 and scaled so its first is unchanged. float64 tensor in, float64 tensor out."""
    alphas_bar_sqrt = torch.sqrt(torch.cumprod(1.0 - betas, dim=0))
    first, last = alphas_bar_sqrt[0].clone(), alphas_bar_sqrt[-1].clone()
    alphas_bar_sqrt = (alphas_bar_sqrt - last) * first / (first - last)
    alphas_bar = alphas_bar_sqrt**2
    alphas = torch.cat([alphas_bar[:1], alphas_bar[1:] / alphas_bar[:-1]])
    return 1.0 - alphas


class _DiscreteVP(_VP):
    """Discrete VP process over integer steps n = 0..T-1 with alphabar_n = prod_{i<=n} (1 - beta_i).

    t is the diffusers timestep n; between integers log(alpha) is interpolated piecewise-linearly (the
    DPM-Solver convention), into a -inf node (zero terminal SNR) alpha itself is. t = -1 is the clean end
    (alphabar = 1); domain [-1, T-1], t_eps = 0.
    """

    is_discrete: ClassVar[bool] = True

    def __post_init__(self):
        _ = self._log_alpha_nodes  # build and check the betas once, at construction

    def betas(self):
        """The T betas as a float64 tensor (before any zero-terminal-SNR rescale)."""
        raise NotImplementedError

    def _checked_betas(self):
        betas = self.betas()
        _check(
            betas.ndim == 1 and len(betas) >= 2,
            f"betas of shape {tuple(betas.shape)}: expected a 1-D array of at least 2 values",
        )
        ok = (betas > 0) & (betas < 1)  # NaN fails both
        if not bool(ok.all()):
            raise ValueError(
                f"betas contain {float(betas[~ok][0])} ({type(self).__name__}): expected every beta in (0, 1)"
            )
        if self.rescale_zero_snr:
            betas = rescale_zero_terminal_snr(betas)
            ok = (betas[:-1] > 0) & (betas[:-1] < 1)
            if not bool(ok.all()) or float(betas[-1]) != 1.0:
                bad = float(betas[:-1][~ok][0]) if not bool(ok.all()) else float(betas[-1])
                raise ValueError(
                    f"betas after rescale_zero_snr contain {bad}: expected inner betas in (0, 1) and a last beta of 1"
                )
        return betas

    @cached_property
    def _log_alpha_nodes(self):
        """float64 log alpha at n = -1, 0, ..., T-1 (log alpha(-1) = 0); the last is -inf under zero terminal SNR."""
        log_alpha = 0.5 * torch.cumsum(torch.log1p(-self._checked_betas()), dim=0)
        return torch.cat([torch.zeros(1, dtype=torch.float64), log_alpha])

    @cached_property
    def _zero_terminal(self):
        return not bool(torch.isfinite(self._log_alpha_nodes[-1]))

    @cached_property
    def _node_cache(self):
        return {}

    def _nodes(self, like):
        """The log-alpha table cast to the dtype and device of `like` (cached per pair)."""
        key = (like.dtype, like.device)
        if torch.compiler.is_compiling():  # while tracing (ONNX export, torch.compile) cache nothing: a traced
            return self._log_alpha_nodes.to(dtype=like.dtype, device=like.device)  # tensor must not outlive it
        if key not in self._node_cache:
            self._node_cache[key] = self._log_alpha_nodes.to(dtype=like.dtype, device=like.device)
        return self._node_cache[key]

    @cached_property
    def _step_tables(self):
        """float64 (alpha, sigma, lam) at the integer steps n = -1, 0, ..., T-1 (row n + 1), from the formulas of
        `alpha_sigma_lam` at t = n, where log alpha is the node itself."""
        n = torch.arange(-1, self.num_steps, dtype=torch.float64)
        return torch.stack(super().alpha_sigma_lam(n))

    @cached_property
    def _step_table_cache(self):
        return {}

    def alpha_sigma_lam(self, t):
        """(alpha, sigma, lam) at t. Integer steps (an integer tensor: what `uniform_discrete` draws for a training
        step) are gathered from a table computed once in float64 and rounded once to float32, on t's device: one
        gather instead of the interpolation, and at least as accurate as evaluating the formulas in float32.
        Floating-point times take the formulas (`_VP.alpha_sigma_lam`)."""
        if not isinstance(t, torch.Tensor) or t.is_floating_point():
            return super().alpha_sigma_lam(t)
        key = t.device
        if torch.compiler.is_compiling():  # while tracing cache nothing (as in `_nodes`)
            table = self._step_tables.to(dtype=torch.float32, device=t.device)
        else:
            if key not in self._step_table_cache:
                self._step_table_cache[key] = self._step_tables.to(dtype=torch.float32, device=t.device)
            table = self._step_table_cache[key]
        alpha, sigma, lam = table[:, t + 1]
        return alpha, sigma, lam

    @property
    def num_steps(self):
        return len(self._log_alpha_nodes) - 1

    @property
    def t_min(self):
        return -1.0

    @property
    def t_max(self):
        return float(self.num_steps - 1)

    @property
    def t_eps(self):
        return 0.0

    def alphas_cumprod(self):
        """alphabar_n for n = 0..T-1, float64."""
        return torch.exp(2.0 * self._log_alpha_nodes[1:])

    def log_alpha(self, t):
        t = as_time(t)
        nodes = self._nodes(t)
        pos = t + 1.0
        i = torch.clamp(torch.floor(pos).to(torch.int64), 0, len(nodes) - 2)
        w = pos - i.to(t.dtype)
        lo, hi = nodes[i], nodes[i + 1]
        finite = torch.isfinite(hi)
        lerp = (1 - w) * lo + w * torch.where(finite, hi, torch.zeros_like(hi))
        lerp_alpha = torch.log((1 - w) * torch.exp(lo))  # into a -inf node: alpha itself is linear
        return torch.where(w == 0, lo, torch.where(finite, lerp, lerp_alpha))

    def lam(self, t):
        log_alpha = self.log_alpha(t)
        # sigma^2 = 1 - alpha^2 = -expm1(2 log alpha): no cancellation as alpha -> 1.
        return log_alpha - 0.5 * torch.log(-torch.expm1(2.0 * log_alpha))

    def t_of_lam(self, lam):
        """Piecewise-linear inverse of log alpha(t) (a searchsorted interpolation), alpha-linear in a -inf interval."""
        lam = as_time(lam)
        log_alpha = 0.5 * F.logsigmoid(2.0 * lam)
        nodes = self._nodes(lam)
        n = torch.arange(-1, len(nodes) - 1, dtype=lam.dtype, device=lam.device)
        finite = torch.isfinite(nodes)
        xp, fp = -nodes[finite], n[finite]  # xp increases
        x = -log_alpha
        j = torch.clamp(torch.searchsorted(xp, x.contiguous(), right=True) - 1, 0, len(xp) - 2)
        x_lo, x_hi = xp[j], xp[j + 1]
        t = fp[j] + (x - x_lo) / (x_hi - x_lo) * (fp[j + 1] - fp[j])
        t = torch.where(x <= xp[0], fp[0], torch.where(x >= xp[-1], fp[-1], t))
        if self._zero_terminal:  # a fixed property of the schedule, not of the tensor
            a_prev = torch.exp(nodes[-2])
            alpha = torch.exp(log_alpha)
            t = torch.where(alpha < a_prev, n[-2] + (1.0 - alpha / a_prev), t)
        return t


def _linspace64(start, end, steps):
    return torch.linspace(start, end, steps, dtype=torch.float64)


def _check_T(T):
    _check(isinstance(T, int) and not isinstance(T, bool) and T >= 2, f"T={T!r}: expected an integer >= 2")


@dataclass(frozen=True)
class LinearBetas(_DiscreteVP):
    """DDPM's linear betas (Ho et al. 2020, Sec. 4): beta_n linear from beta_start to beta_end over T steps."""

    name: ClassVar[str] = "linear"
    T: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    rescale_zero_snr: bool = False

    def betas(self):
        _check_T(self.T)
        return _linspace64(self.beta_start, self.beta_end, self.T)


@dataclass(frozen=True)
class ScaledLinearBetas(_DiscreteVP):
    """Latent diffusion's "scaled_linear" betas: sqrt(beta) linear from sqrt(beta_start) to sqrt(beta_end)."""

    name: ClassVar[str] = "scaled_linear"
    T: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    rescale_zero_snr: bool = False

    def betas(self):
        _check_T(self.T)
        return _linspace64(self.beta_start**0.5, self.beta_end**0.5, self.T) ** 2


@dataclass(frozen=True)
class CosineBetas(_DiscreteVP):
    """Nichol & Dhariwal (2021), eq. 17: alphabar(u) = f(u)/f(0), f(u) = cos^2((u + s)/(1 + s) pi/2) at u = n/T,
    beta_n = min(1 - alphabar_{n+1}/alphabar_n, max_beta)."""

    name: ClassVar[str] = "cosine"
    T: int = 1000
    s: float = 0.008
    max_beta: float = 0.999
    rescale_zero_snr: bool = False

    def betas(self):
        _check_T(self.T)
        _check(0.0 < self.max_beta < 1.0, f"max_beta={self.max_beta!r}: expected a number in (0, 1)")
        u = torch.arange(self.T + 1, dtype=torch.float64) / self.T
        f = torch.cos((u + self.s) / (1 + self.s) * math.pi / 2) ** 2
        return torch.clamp(1.0 - f[1:] / f[:-1], max=self.max_beta)


@dataclass(frozen=True)
class SigmoidBetas(_DiscreteVP):
    """GeoDiff's sigmoid betas (Xu et al. 2022): beta = sigmoid(linspace(-6, 6, T)) (beta_end - beta_start) + beta_start."""

    name: ClassVar[str] = "sigmoid"
    T: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    rescale_zero_snr: bool = False

    def betas(self):
        _check_T(self.T)
        return torch.sigmoid(_linspace64(-6.0, 6.0, self.T)) * (self.beta_end - self.beta_start) + self.beta_start


@dataclass(frozen=True)
class ExplicitBetas(_DiscreteVP):
    """Any betas given as a tuple of floats in (0, 1); T is their number."""

    name: ClassVar[str] = "betas"
    values: tuple = ()
    rescale_zero_snr: bool = False

    def betas(self):
        return torch.as_tensor(self.values, dtype=torch.float64)


# --------------------------------------------------------------------------------------------------------
# Continuous time.
# --------------------------------------------------------------------------------------------------------


def _check_beta_range(beta_min, beta_max):
    _check(math.isfinite(beta_min) and beta_min > 0, f"beta_min={beta_min!r}: expected a finite number > 0")
    _check(
        math.isfinite(beta_max) and beta_max >= beta_min, f"beta_max={beta_max!r}: expected a finite number >= beta_min"
    )


@dataclass(frozen=True)
class LinearVP(_ScoreSDEBeta, _VP):
    """Score-SDE's VP SDE (Song et al. 2021, eq. 11), beta(t) = beta_min + t (beta_max - beta_min), t in [0, 1].

    B(t) = beta_min t + (beta_max - beta_min) t^2 / 2; lam = -log(expm1(B)) / 2; inverse B = log1p(e^{-2 lam}),
    t = 2B / (beta_min + sqrt(beta_min^2 + 2 (beta_max - beta_min) B)).
    """

    name: ClassVar[str] = "vp"
    beta_min: float = 0.1
    beta_max: float = 20.0
    t_min: ClassVar[float] = 0.0
    t_max: ClassVar[float] = 1.0
    t_eps: ClassVar[float] = 1e-3

    def lam(self, t):
        return -0.5 * self.log_expm1_int_beta(t)

    def t_of_lam(self, lam):
        B = _softplus(-2.0 * as_time(lam))
        return self._held(self.t_of_int_beta(B))


@dataclass(frozen=True)
class CosineVP(_VP):
    """Cosine schedule (Nichol & Dhariwal 2021, eq. 17) in continuous t in [0, 1], unnormalised:
    phi = (t + s)/(1 + s) pi/2, lam = -log tan(phi), computed with the complementary angle
    u = pi/2 - phi = (1 - t)/(1 + s) pi/2 as lam = log tan(u) so that t = 1 gives alpha = 0 exactly;
    t_of_lam = 1 - arctan(e^lam) (1 + s) 2/pi."""

    name: ClassVar[str] = "vp_cosine"
    s: float = 0.008
    t_min: ClassVar[float] = 0.0
    t_max: ClassVar[float] = 1.0
    t_eps: ClassVar[float] = 0.0

    def __post_init__(self):
        _check(math.isfinite(self.s) and self.s > 0, f"s={self.s!r}: expected a finite number > 0")

    def lam(self, t):
        u = (1.0 - as_time(t)) / (1 + self.s) * (math.pi / 2)
        return torch.log(torch.tan(u))

    def t_of_lam(self, lam):
        u = torch.atan(torch.exp(as_time(lam)))
        return self._held(1.0 - u / (math.pi / 2) * (1 + self.s))


@dataclass(frozen=True)
class SubVP(_ScoreSDEBeta, _Schedule):
    """Score-SDE's sub-VP SDE (Song et al. 2021, eq. 29): alpha = e^{-B/2}, sigma = 1 - e^{-B}, B as in LinearVP.

    lam = -B/2 - log(-expm1(-B)). Inverse through u = alpha: e^lam = u / (1 - u^2), solved without cancellation
    as log u = -log1p((e^{-lam} + a / (sqrt(a + 4) + 2)) / 2), a = e^{-2 lam}; then t from B = -2 log u.
    """

    name: ClassVar[str] = "subvp"
    beta_min: float = 0.1
    beta_max: float = 20.0
    t_min: ClassVar[float] = 0.0
    t_max: ClassVar[float] = 1.0
    t_eps: ClassVar[float] = 1e-3

    def alpha(self, t):
        return torch.exp(-0.5 * self.int_beta(t))

    def sigma(self, t):
        return -torch.expm1(-self.int_beta(t))

    def lam(self, t):
        return -0.5 * self.int_beta(t) - self.log_expm1_int_beta(t, sign=-1.0)

    def t_of_lam(self, lam):
        lam = as_time(lam)
        # Floor lam so that a = e^{-2 lam} stays finite in this dtype (-300 in float64 as in the reference; any
        # such lam is far beyond t = 1, where lam is about -5 for the default betas).
        floor = -min(300.0, 0.45 * math.log(torch.finfo(lam.dtype).max))
        lam = torch.clamp(lam, min=floor)
        a = torch.exp(-2.0 * lam)
        log_u = -torch.log1p(0.5 * (torch.exp(-lam) + a / (torch.sqrt(a + 4.0) + 2.0)))
        B = -2.0 * log_u
        return self._held(self.t_of_int_beta(B))


@dataclass(frozen=True)
class VE(_Schedule):
    """Score-SDE's VE SDE (Song et al. 2021, eq. 9): alpha = 1, sigma = sigma_min (sigma_max / sigma_min)^t, t in [0, 1]."""

    name: ClassVar[str] = "ve"
    sigma_min: float = 0.01
    sigma_max: float = 50.0
    t_min: ClassVar[float] = 0.0
    t_max: ClassVar[float] = 1.0
    t_eps: ClassVar[float] = 0.0

    def __post_init__(self):
        _check(
            math.isfinite(self.sigma_min) and self.sigma_min > 0,
            f"sigma_min={self.sigma_min!r}: expected a finite number > 0",
        )
        _check(
            math.isfinite(self.sigma_max) and self.sigma_max > self.sigma_min,
            f"sigma_max={self.sigma_max!r}: expected a finite number > sigma_min",
        )

    def alpha(self, t):
        return torch.ones_like(as_time(t))

    def sigma(self, t):
        return self.sigma_min * torch.pow(self.sigma_max / self.sigma_min, as_time(t))

    def lam(self, t):
        return -torch.log(self.sigma(t))

    def t_of_lam(self, lam):
        return self._held((-as_time(lam) - math.log(self.sigma_min)) / math.log(self.sigma_max / self.sigma_min))


@dataclass(frozen=True)
class EDM(_Schedule):
    """Karras et al. (2022), Table 1: alpha = 1, sigma = t, t in [0, sigma_max]; t = 0 is the clean end."""

    name: ClassVar[str] = "edm"
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    sigma_data: float = 0.5
    t_min: ClassVar[float] = 0.0

    def __post_init__(self):
        _check(
            math.isfinite(self.sigma_min) and self.sigma_min > 0,
            f"sigma_min={self.sigma_min!r}: expected a finite number > 0",
        )
        _check(
            math.isfinite(self.sigma_max) and self.sigma_max > self.sigma_min,
            f"sigma_max={self.sigma_max!r}: expected a finite number > sigma_min",
        )
        _check(
            math.isfinite(self.sigma_data) and self.sigma_data > 0,
            f"sigma_data={self.sigma_data!r}: expected a finite number > 0",
        )

    @property
    def t_max(self):
        return float(self.sigma_max)

    @property
    def t_eps(self):
        return float(self.sigma_min)

    def alpha(self, t):
        return torch.ones_like(as_time(t))

    def sigma(self, t):
        return as_time(t) * 1.0

    def lam(self, t):
        return -torch.log(as_time(t))

    def t_of_lam(self, lam):
        return self._held(torch.exp(-as_time(lam)))


@dataclass(frozen=True)
class Flow(_Schedule):
    """Rectified flow (Liu et al. 2022; Lipman et al. 2022): alpha = 1 - t, sigma = t, lam = log((1 - t)/t),
    t_of_lam = sigmoid(-lam). `shift` is SD3's time shift (Esser et al. 2024, eq. 23), used by grids and
    training-time distributions only."""

    name: ClassVar[str] = "flow"
    shift: float = 1.0
    t_min: ClassVar[float] = 0.0
    t_max: ClassVar[float] = 1.0
    t_eps: ClassVar[float] = 0.0

    def __post_init__(self):
        _check(math.isfinite(self.shift) and self.shift > 0, f"shift={self.shift!r}: expected a finite number > 0")

    def alpha(self, t):
        return 1.0 - as_time(t)

    def sigma(self, t):
        return as_time(t) * 1.0

    def lam(self, t):
        t = as_time(t)
        return torch.log1p(-t) - torch.log(t)

    def t_of_lam(self, lam):
        return torch.exp(F.logsigmoid(-as_time(lam)))

    def shifted(self, t, shift=None):
        """t' = shift t / (1 + (shift - 1) t), evaluated as shift t / (shift t + (1 - t)): the denominator is the
        numerator plus a nonnegative term, so [0, 1] maps into [0, 1] in floating point too (the first form gave
        1.0000000000000002 at t = 1 for about 1 shift in 140)."""
        s = self.shift if shift is None else float(shift)
        _check(math.isfinite(s) and s > 0, f"shift={shift!r}: expected a finite number > 0")
        t = as_time(t)
        return s * t / (s * t + (1.0 - t))


SCHEDULES = {
    "linear": LinearBetas,
    "scaled_linear": ScaledLinearBetas,
    "cosine": CosineBetas,
    "sigmoid": SigmoidBetas,
    "betas": ExplicitBetas,
    "vp": LinearVP,
    "vp_cosine": CosineVP,
    "subvp": SubVP,
    "ve": VE,
    "edm": EDM,
    "flow": Flow,
}


def lookup(registry, name, *, what):
    """registry[name], or a ValueError listing the known names."""
    try:
        return registry[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown {what} {name!r}: expected one of {', '.join(sorted(registry))}") from None


def make_schedule(name, **params):
    """SCHEDULES[name](**params), with clear errors for unknown names and parameters."""
    cls = lookup(SCHEDULES, name, what="schedule")
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(params) - fields)
    if unknown:
        raise ValueError(f"schedule {name!r} has no parameter {unknown[0]!r}: expected some of {sorted(fields)}")
    if "values" in params:
        params["values"] = tuple(float(b) for b in params["values"])
    return cls(**params)


def schedule_from_dict(d):
    """The torch schedule for a serialised schedule dict {"name": ..., <parameters>} (the reference's `to_dict()`
    form, as stored in checkpoints and ONNX metadata)."""
    if not isinstance(d, dict) or "name" not in d:
        raise ValueError(f"schedule dict {d!r}: expected a dict with a 'name' key and the schedule's parameters")
    params = dict(d)
    return make_schedule(params.pop("name"), **params)

"""Noise schedules: the forward process x_t = alpha(t) x0 + sigma(t) eps as the two functions alpha, sigma.

Every schedule is a frozen dataclass whose fields are its parameters and whose methods are pure functions of
t: `alpha`, `sigma`, `lam` (half log-SNR, lam = log(alpha / sigma)) and the inverse `t_of_lam`. Its time
domain is [t_min, t_max]; `t_eps` is the smallest time that is still noisy (where a grid stops before an
optional clean end). An inverse that lands within rounding outside the domain returns the domain's end
(`_held`), so a time a sampler computes from a noise level is always one the schedule accepts. `to_dict()` / `schedule_from_dict()` are the serialised form stored in checkpoints and
ONNX metadata. A published registry name never changes meaning.

Numerics: VP schedules compute lam first and get (alpha, sigma) from log-sigmoids (`vp_alpha_sigma`), never
`sqrt(1 - alphabar)`, which loses all precision as alpha -> 1.
"""

import dataclasses
from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar

import numpy as np
from diffspec.reference import _checks


def vp_alpha_sigma(lam):
    """(alpha, sigma) of a variance-preserving process from its half log-SNR lam = log(alpha / sigma).

    alpha^2 = sigmoid(2 lam), sigma^2 = sigmoid(-2 lam), evaluated as log-sigmoids so that sigma keeps full
    relative precision as alpha -> 1 (lam -> +inf) and alpha does as sigma -> 1 (lam -> -inf).
    """
    lam = np.asarray(lam, dtype=np.float64)
    log_alpha = -0.5 * np.logaddexp(0.0, -2.0 * lam)
    log_sigma = -0.5 * np.logaddexp(0.0, 2.0 * lam)
    return np.exp(log_alpha), np.exp(log_sigma)


class _Schedule:
    """Shared plumbing: domain checks and the serialised form. The math lives in each subclass."""

    name: ClassVar[str]
    is_discrete: ClassVar[bool] = False
    variance_preserving: ClassVar[bool] = False

    def __post_init__(self):
        # The reference is the spec: a schedule with bad parameters is refused when it is built, with the same
        # rules as the trainer's schedules, never later as a NaN.
        self._check_parameters()

    def _check_parameters(self):
        pass

    def _t(self, t):
        return _checks.times_in_domain("t", t, self)

    def _held(self, t):
        """An inverse's result held inside [t_min, t_max] where it lands within rounding outside it.

        Round trips through lam are exact only up to rounding: t_of_lam(lam(t_max)) gave 1.0000000000000002 on
        some LinearVP, SubVP and VE schedules, EDM's 80.00000000000001, and t_of_lam(lam(0)) -2.2e-16 on CosineVP,
        times that every later alpha(t) refuses. A result within 1e-12 (relative to the domain's scale) outside an
        end is that end; one further out is returned as it is (a lam beyond the domain's has no time inside it).
        """
        lo, hi = float(self.t_min), float(self.t_max)
        slack = 1e-12 * max(1.0, abs(lo), abs(hi))
        t = np.asarray(t, dtype=np.float64)
        t = np.where((t < lo) & (t >= lo - slack), lo, t)
        return np.where((t > hi) & (t <= hi + slack), hi, t)[()]

    def sigma_ve(self, t):
        """sigma / alpha = exp(-lam): the EDM / k-diffusion noise level."""
        return np.exp(-self.lam(t))

    def t_of_sigma_ve(self, sigma_ve):
        """Inverse of `sigma_ve`."""
        sigma_ve = np.asarray(sigma_ve, dtype=np.float64)
        with np.errstate(divide="ignore"):
            return self.t_of_lam(-np.log(sigma_ve))

    def has_clean_end(self):
        """True when sigma(t_min) == 0, so a grid may end on the data itself."""
        return bool(self.sigma(self.t_min) == 0.0)

    def to_dict(self):
        return {"name": self.name, **dataclasses.asdict(self)}


class _VP(_Schedule):
    """A variance-preserving schedule defined by its lam(t): (alpha, sigma) follow through `vp_alpha_sigma`."""

    variance_preserving: ClassVar[bool] = True

    def alpha(self, t):
        return vp_alpha_sigma(self.lam(t))[0]

    def sigma(self, t):
        return vp_alpha_sigma(self.lam(t))[1]


class _ScoreSDEBeta:
    """Score-SDE's linear beta(t) = beta_min + t (beta_max - beta_min) (fields of the subclass) and its integral.

    B(t) = beta_min t + (beta_max - beta_min) t^2 / 2; the inverse is the positive root of that quadratic, written
    as t = 2B / (beta_min + sqrt(beta_min^2 + 2 (beta_max - beta_min) B)) so it keeps precision as B -> 0.
    """

    def _check_beta_range(self):
        _checks.positive("beta_min", self.beta_min)
        _checks.at_least("beta_max", self.beta_max, "beta_min", self.beta_min)

    def int_beta(self, t):
        t = self._t(t)
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2

    def t_of_int_beta(self, B):
        d = self.beta_max - self.beta_min
        return 2.0 * B / (self.beta_min + np.sqrt(self.beta_min**2 + 2.0 * d * B))

    def log_expm1_int_beta(self, t, sign=1.0):
        """log(expm1(B)) (sign = 1) or log(-expm1(-B)) (sign = -1) at B = B(t), without underflow or overflow.

        Below B = 1: log B + log(expm1(sign B) / (sign B)) with log B = log t + log(beta_min + (beta_max - beta_min)
        t / 2), finite even where t is so small that B itself rounds to 0 (a subnormal t: sigma ~ sqrt(B) is still
        representable). Above: B + log1p(-e^{-B}) (sign = 1) or log1p(-e^{-B}) (sign = -1), finite where expm1(B)
        overflows. log t = -inf at t = 0 gives lam = inf there.
        """
        t = self._t(t)
        B = self.int_beta(t)
        small = B < 1.0
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            Bs = np.where(small & (B > 0), B, 1.0)
            ratio = np.where(B > 0, np.expm1(sign * Bs) / (sign * Bs), 1.0)
            log_B = np.log(t) + np.log(self.beta_min + 0.5 * (self.beta_max - self.beta_min) * t)
            Bl = np.where(small, 1.0, B)
            large = np.log1p(-np.exp(-Bl)) + (Bl if sign > 0 else 0.0)
            return np.where(small, log_B + np.log(ratio), large)


# --------------------------------------------------------------------------------------------------------
# Discrete-time VP (DDPM): betas over T steps.
# --------------------------------------------------------------------------------------------------------


def rescale_zero_terminal_snr(betas):
    """Betas whose last alphabar is exactly 0 (Lin et al. 2023, "Common Diffusion Noise Schedules and Sample
    Steps are Flawed", Algorithm 1): sqrt(alphabar) is shifted so its last value is 0 and scaled so its first
    value is unchanged."""
    alphas_bar_sqrt = np.sqrt(np.cumprod(1.0 - np.asarray(betas, dtype=np.float64)))
    first, last = alphas_bar_sqrt[0], alphas_bar_sqrt[-1]
    alphas_bar_sqrt = (alphas_bar_sqrt - last) * first / (first - last)
    alphas_bar = alphas_bar_sqrt**2
    alphas = np.concatenate([alphas_bar[:1], alphas_bar[1:] / alphas_bar[:-1]])
    return 1.0 - alphas


class _DiscreteVP(_VP):
    """Discrete VP process over integer steps n = 0..T-1 with alphabar_n = prod_{i<=n} (1 - beta_i).

    Time t is the diffusers timestep n. Between integers log(alpha) is interpolated piecewise-linearly (the
    DPM-Solver convention for discrete models), so every sampler may use non-integer times. t = -1 is the
    clean end, alphabar = 1 (what diffusers calls `set_alpha_to_one`); the domain is [-1, T-1] and t_eps = 0.
    """

    is_discrete: ClassVar[bool] = True

    def _check_parameters(self):
        _checks.boolean("rescale_zero_snr", self.rescale_zero_snr)
        self._checked_betas()  # every beta in (0, 1), checked once at construction

    def betas(self):
        raise NotImplementedError

    def _checked_betas(self):
        betas = np.asarray(self.betas(), dtype=np.float64)
        if betas.ndim != 1 or len(betas) < 2:
            raise ValueError(f"betas of shape {betas.shape}: expected a 1-D array of at least 2 values")
        # Check the betas as given first (NaN fails both comparisons), then what the rescale made of them.
        ok = (betas > 0) & (betas < 1)
        if not np.all(ok):
            raise ValueError(f"betas contain {betas[~ok][0]} ({type(self).__name__}): expected every beta in (0, 1)")
        if self.rescale_zero_snr:
            betas = rescale_zero_terminal_snr(betas)
            ok = (betas[:-1] > 0) & (betas[:-1] < 1)
            if not np.all(ok) or betas[-1] != 1.0:
                raise ValueError(
                    f"betas after rescale_zero_snr contain {betas[:-1][~ok][0] if not np.all(ok) else betas[-1]}: "
                    "expected inner betas in (0, 1) and a last beta of 1"
                )
        return betas

    @cached_property
    def _log_alpha_nodes(self):
        """log alpha at n = -1, 0, ..., T-1 (log alpha(-1) = 0); the last is -inf under zero terminal SNR."""
        betas = self._checked_betas()
        with np.errstate(divide="ignore"):
            log_alpha = 0.5 * np.cumsum(np.log1p(-betas))
        return np.concatenate([[0.0], log_alpha])

    @property
    def num_steps(self):
        """T, the number of discrete diffusion steps."""
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
        """alphabar_n for n = 0..T-1."""
        return np.exp(2.0 * self._log_alpha_nodes[1:])

    def log_alpha(self, t):
        t = self._t(t)
        nodes = self._log_alpha_nodes
        pos = t + 1.0
        i = np.clip(np.floor(pos).astype(np.int64), 0, len(nodes) - 2)
        w = pos - i
        lo, hi = nodes[i], nodes[i + 1]
        with np.errstate(invalid="ignore", divide="ignore"):
            lerp = (1 - w) * lo + w * np.where(np.isfinite(hi), hi, 0.0)
            # Into a -inf node (zero terminal SNR) interpolate alpha itself, so alpha -> 0 continuously.
            lerp_alpha = np.log((1 - w) * np.exp(lo))
        out = np.where(np.isfinite(hi), lerp, lerp_alpha)
        return np.where(w == 0, lo, out)

    def lam(self, t):
        log_alpha = self.log_alpha(t)
        # lam = log alpha - log sigma with sigma^2 = 1 - alpha^2 = -expm1(2 log alpha).
        with np.errstate(divide="ignore"):
            return log_alpha - 0.5 * np.log(-np.expm1(2.0 * log_alpha))

    def t_of_lam(self, lam):
        lam = np.asarray(lam, dtype=np.float64)
        if np.any(np.isnan(lam)):
            raise ValueError("lam contains NaN: expected half log-SNR values in [-inf, inf]")
        log_alpha = -0.5 * np.logaddexp(0.0, -2.0 * lam)
        nodes = self._log_alpha_nodes
        n = np.arange(-1.0, len(nodes) - 1.0)
        finite = np.isfinite(nodes)
        # Piecewise-linear inverse on the finite nodes (xp must increase: use -log alpha).
        t = np.interp(-log_alpha, -nodes[finite], n[finite])
        if not finite[-1]:
            # Last interval (zero terminal SNR): alpha is linear there, alpha = (1 - w) alpha_{T-2}.
            a_prev = np.exp(nodes[-2])
            alpha = np.exp(log_alpha)
            in_last = alpha < a_prev
            t = np.where(in_last, n[-2] + (1.0 - alpha / a_prev), t)
        return t


@dataclass(frozen=True)
class LinearBetas(_DiscreteVP):
    """DDPM's linear betas (Ho et al. 2020, Sec. 4): beta_n linear from beta_start to beta_end over T steps."""

    name: ClassVar[str] = "linear"
    T: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    rescale_zero_snr: bool = False

    def betas(self):
        _checks.integer("T", self.T, minimum=2)
        return np.linspace(self.beta_start, self.beta_end, self.T, dtype=np.float64)


@dataclass(frozen=True)
class ScaledLinearBetas(_DiscreteVP):
    """Latent diffusion's "scaled_linear" betas: sqrt(beta) linear from sqrt(beta_start) to sqrt(beta_end)."""

    name: ClassVar[str] = "scaled_linear"
    T: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    rescale_zero_snr: bool = False

    def betas(self):
        _checks.integer("T", self.T, minimum=2)
        return np.linspace(self.beta_start**0.5, self.beta_end**0.5, self.T, dtype=np.float64) ** 2


@dataclass(frozen=True)
class CosineBetas(_DiscreteVP):
    """Nichol & Dhariwal (2021), "Improved DDPM", eq. 17: alphabar(t) = f(t)/f(0), f(t) = cos^2((t/T + s)/(1 + s) pi/2),
    beta_n = min(1 - alphabar_{n+1}/alphabar_n, max_beta) with the paper's cap max_beta = 0.999."""

    name: ClassVar[str] = "cosine"
    T: int = 1000
    s: float = 0.008
    max_beta: float = 0.999
    rescale_zero_snr: bool = False

    def betas(self):
        _checks.integer("T", self.T, minimum=2)
        _checks.in_range("max_beta", self.max_beta, 0.0, 1.0, lo_open=True, hi_open=True)

        def f(u):
            return np.cos((u + self.s) / (1 + self.s) * np.pi / 2) ** 2

        u = np.arange(self.T + 1, dtype=np.float64) / self.T
        return np.minimum(1.0 - f(u[1:]) / f(u[:-1]), self.max_beta)


@dataclass(frozen=True)
class SigmoidBetas(_DiscreteVP):
    """GeoDiff's sigmoid betas (Xu et al. 2022): beta = sigmoid(linspace(-6, 6, T)) (beta_end - beta_start) + beta_start."""

    name: ClassVar[str] = "sigmoid"
    T: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    rescale_zero_snr: bool = False

    def betas(self):
        _checks.integer("T", self.T, minimum=2)
        z = np.linspace(-6.0, 6.0, self.T, dtype=np.float64)
        return 1.0 / (1.0 + np.exp(-z)) * (self.beta_end - self.beta_start) + self.beta_start


@dataclass(frozen=True)
class ExplicitBetas(_DiscreteVP):
    """Any betas given as a tuple of floats in (0, 1); T is their number."""

    name: ClassVar[str] = "betas"
    values: tuple = ()
    rescale_zero_snr: bool = False

    def betas(self):
        return np.asarray(self.values, dtype=np.float64)


# --------------------------------------------------------------------------------------------------------
# Continuous time, t in [0, 1].
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LinearVP(_ScoreSDEBeta, _VP):
    """Score-SDE's VP SDE (Song et al. 2021, eq. 11 and App. B) with beta(t) = beta_min + t (beta_max - beta_min).

    With B(t) = int_0^t beta = beta_min t + (beta_max - beta_min) t^2 / 2: alpha^2 = e^{-B}, sigma^2 = 1 - e^{-B},
    so lam = -log(expm1(B)) / 2 (cancellation-free; `log_expm1_int_beta` keeps it finite for subnormal t and large
    B), and the inverse is B = log1p(e^{-2 lam}) with t the root
    of a quadratic written as 2B / (beta_min + sqrt(beta_min^2 + 2 (beta_max - beta_min) B)).
    """

    name: ClassVar[str] = "vp"
    beta_min: float = 0.1
    beta_max: float = 20.0
    t_min: ClassVar[float] = 0.0
    t_max: ClassVar[float] = 1.0
    t_eps: ClassVar[float] = 1e-3

    def _check_parameters(self):
        self._check_beta_range()

    def lam(self, t):
        return -0.5 * self.log_expm1_int_beta(t)

    def t_of_lam(self, lam):
        return self._held(self.t_of_int_beta(np.logaddexp(0.0, -2.0 * np.asarray(lam, dtype=np.float64))))


@dataclass(frozen=True)
class CosineVP(_VP):
    """Cosine schedule of Nichol & Dhariwal (2021, eq. 17) in continuous time t in [0, 1].

    alphabar(t) = cos^2(phi) with phi = (t + s)/(1 + s) pi/2, so SNR = cot^2(phi) and lam = -log tan(phi).
    This is the unnormalised form used by continuous-time code (alphabar(0) slightly below 1); the discrete
    schedule divides by alphabar(0) and is `CosineBetas`. Computed with the complementary angle
    u = pi/2 - phi = (1 - t)/(1 + s) pi/2 as lam = log tan(u), so that t = 1 gives alpha = 0 exactly (lam = -inf)
    instead of tan(pi/2) = 1.6e16 in floating point, and the inverse t = 1 - arctan(e^lam) (1 + s) 2/pi keeps
    full precision near t = 1.
    """

    name: ClassVar[str] = "vp_cosine"
    s: float = 0.008
    t_min: ClassVar[float] = 0.0
    t_max: ClassVar[float] = 1.0
    t_eps: ClassVar[float] = 0.0

    def _check_parameters(self):
        _checks.positive("s", self.s)

    def lam(self, t):
        u = (1.0 - self._t(t)) / (1 + self.s) * (np.pi / 2)
        with np.errstate(divide="ignore"):
            return np.log(np.tan(u))

    def t_of_lam(self, lam):
        u = np.arctan(np.exp(np.asarray(lam, dtype=np.float64)))
        return self._held(1.0 - u / (np.pi / 2) * (1 + self.s))


@dataclass(frozen=True)
class SubVP(_ScoreSDEBeta, _Schedule):
    """Score-SDE's sub-VP SDE (Song et al. 2021, eq. 29): alpha = e^{-B/2}, sigma = 1 - e^{-B}, B as in `LinearVP`.

    lam = -B/2 - log(-expm1(-B)). Inverse: with u = alpha = e^{-B/2}, e^lam = u / (1 - u^2), so
    u = 2 e^lam / (1 + sqrt(1 + 4 e^{2 lam})) (the rationalised root), then t from B = -2 log u.
    """

    name: ClassVar[str] = "subvp"
    beta_min: float = 0.1
    beta_max: float = 20.0
    t_min: ClassVar[float] = 0.0
    t_max: ClassVar[float] = 1.0
    t_eps: ClassVar[float] = 1e-3

    def _check_parameters(self):
        self._check_beta_range()

    def alpha(self, t):
        return np.exp(-0.5 * self.int_beta(t))

    def sigma(self, t):
        return -np.expm1(-self.int_beta(t))

    def lam(self, t):
        return -0.5 * self.int_beta(t) - self.log_expm1_int_beta(t, sign=-1.0)

    def t_of_lam(self, lam):
        lam = np.maximum(np.asarray(lam, dtype=np.float64), -300.0)
        # log u = -log1p((e^{-lam} + a / (sqrt(a + 4) + 2)) / 2) with a = e^{-2 lam}: no cancellation as u -> 1.
        a = np.exp(-2.0 * lam)
        log_u = -np.log1p(0.5 * (np.exp(-lam) + a / (np.sqrt(a + 4.0) + 2.0)))
        B = -2.0 * log_u
        return self._held(self.t_of_int_beta(B))


@dataclass(frozen=True)
class VE(_Schedule):
    """Score-SDE's VE SDE (Song et al. 2021, eq. 9): alpha = 1, sigma(t) = sigma_min (sigma_max / sigma_min)^t, t in [0, 1].

    lam = -log sigma; t_of_lam = (-lam - log sigma_min) / log(sigma_max / sigma_min). No clean end: t = 0 is
    sigma_min.
    """

    name: ClassVar[str] = "ve"
    sigma_min: float = 0.01
    sigma_max: float = 50.0
    t_min: ClassVar[float] = 0.0
    t_max: ClassVar[float] = 1.0
    t_eps: ClassVar[float] = 0.0

    def _check_parameters(self):
        _checks.positive("sigma_min", self.sigma_min)
        _checks.greater("sigma_max", self.sigma_max, "sigma_min", self.sigma_min)

    def alpha(self, t):
        return np.ones_like(self._t(t))

    def sigma(self, t):
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** self._t(t)

    def lam(self, t):
        return -np.log(self.sigma(t))

    def t_of_lam(self, lam):
        log_sigma = -np.asarray(lam, dtype=np.float64)
        return self._held((log_sigma - np.log(self.sigma_min)) / np.log(self.sigma_max / self.sigma_min))


@dataclass(frozen=True)
class EDM(_Schedule):
    """Karras et al. (2022), "Elucidating the Design Space", Table 1: alpha = 1, sigma = t, t in [0, sigma_max].

    sigma_min bounds the noisy part of sampling grids (t_eps); t = 0 is the clean end. sigma_data is the data's
    standard deviation used by the preconditioning and the EDM loss weight.
    """

    name: ClassVar[str] = "edm"
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    sigma_data: float = 0.5
    t_min: ClassVar[float] = 0.0

    def _check_parameters(self):
        _checks.positive("sigma_min", self.sigma_min)
        _checks.greater("sigma_max", self.sigma_max, "sigma_min", self.sigma_min)
        _checks.positive("sigma_data", self.sigma_data)

    @property
    def t_max(self):
        return float(self.sigma_max)

    @property
    def t_eps(self):
        return float(self.sigma_min)

    def alpha(self, t):
        return np.ones_like(self._t(t))

    def sigma(self, t):
        return self._t(t) * 1.0

    def lam(self, t):
        with np.errstate(divide="ignore"):
            return -np.log(self._t(t))

    def t_of_lam(self, lam):
        return self._held(np.exp(-np.asarray(lam, dtype=np.float64)))


@dataclass(frozen=True)
class Flow(_Schedule):
    """Rectified flow / flow matching (Liu et al. 2022; Lipman et al. 2022): alpha = 1 - t, sigma = t, t in [0, 1].

    lam = log((1 - t) / t) and t_of_lam = sigmoid(-lam). `shift` is SD3's resolution shift (Esser et al. 2024,
    eq. 23), t' = shift t / (1 + (shift - 1) t): it changes which times grids and training visit, never alpha
    and sigma themselves.
    """

    name: ClassVar[str] = "flow"
    shift: float = 1.0
    t_min: ClassVar[float] = 0.0
    t_max: ClassVar[float] = 1.0
    t_eps: ClassVar[float] = 0.0

    def _check_parameters(self):
        _checks.positive("shift", self.shift)

    def alpha(self, t):
        return 1.0 - self._t(t)

    def sigma(self, t):
        return self._t(t) * 1.0

    def lam(self, t):
        t = self._t(t)
        with np.errstate(divide="ignore"):
            return np.log1p(-t) - np.log(t)

    def t_of_lam(self, lam):
        lam = np.asarray(lam, dtype=np.float64)
        return np.exp(-np.logaddexp(0.0, lam))

    def shifted(self, t, shift=None):
        """SD3's time shift applied to t: shift t / (1 + (shift - 1) t), evaluated as shift t / (shift t + (1 - t)).

        The two agree in exact arithmetic; the second maps [0, 1] into [0, 1] in floating point too (the denominator
        is the numerator plus a nonnegative term, so the rounded quotient never exceeds 1, and t = 1 gives exactly 1),
        where the first gave 1.0000000000000002 at t = 1 for about 1 shift in 140 (shift = 0.3014132435025377).
        """
        s = self.shift if shift is None else _checks.positive("shift", shift)
        t = np.asarray(t, dtype=np.float64)
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


def make_schedule(name: str, **params):
    """SCHEDULES[name](**params) with clear errors for unknown names and parameters."""
    cls = _checks.lookup(SCHEDULES, name, what="schedule")
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(params) - fields)
    if unknown:
        raise ValueError(f"schedule {name!r} has no parameter {unknown[0]!r}: expected some of {sorted(fields)}")
    if "values" in params:
        params["values"] = tuple(float(b) for b in params["values"])
    return cls(**params)


def schedule_from_dict(d):
    """Inverse of `schedule.to_dict()`: {"name": ..., <parameters>} -> an equal schedule."""
    if not isinstance(d, dict) or "name" not in d:
        raise ValueError(f"schedule dict {d!r}: expected a dict with a 'name' key and the schedule's parameters")
    params = dict(d)
    return make_schedule(params.pop("name"), **params)

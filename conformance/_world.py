"""The exact worlds the checks run in: Gaussian data (exact probability-flow map), the standard 2-D mixture
(exact denoiser, exact data distribution), schedule families and grids between fixed log-SNR endpoints."""

import numpy as np
from diffspec.reference.grids import make_grid
from diffspec.reference.oracles import GaussianMixture, gaussian_flow_map, standard_mixture_2d
from diffspec.reference.samplers import Requirement
from diffspec.reference.schedules import make_schedule

MEAN, STD = np.array([0.5, -0.2]), np.array([0.3, 0.8])
GAUSS = GaussianMixture.gaussian(MEAN, STD)
MIXTURE = standard_mixture_2d()

# Families for the order check: (label, schedule name, schedule parameters, grid name). Three VP/VE families for
# samplers that take any schedule; three flow shifts for the flow samplers (which need a flow schedule).
ORDER_FAMILIES: tuple[tuple[str, str, dict[str, float], str], ...] = (
    ("vp_cosine/uniform_lam", "vp_cosine", {}, "uniform_lam"),
    ("edm/karras", "edm", {}, "karras"),
    ("vp/time_quadratic", "vp", {}, "time_quadratic"),
)
FLOW_FAMILIES: tuple[tuple[str, str, dict[str, float], str], ...] = (
    ("flow/uniform", "flow", {"shift": 1.0}, "uniform"),
    ("flow/karras", "flow", {"shift": 1.0}, "karras"),
    ("flow3/uniform_lam", "flow", {"shift": 3.0}, "uniform_lam"),
)


def order_setup(order: float, mixture: bool = False) -> tuple[float, float, list[int]]:
    """(lam_start, lam_end, step counts) for measuring an order: wide for low orders, narrower above 2 so that the
    finest grid's error stays far above float64 rounding; fourth order from high noise, where the lower-order
    start's constant is small. The mixture's narrow components make its flow stiff past lam ~ 1."""
    if mixture:
        return -1.0, 1.0, [16, 32, 64, 128]
    if order <= 2:
        return -2.0, 4.0, [16, 32, 64, 128]
    if order < 4:
        return -1.0, 2.0, [16, 32, 64, 128]
    return -4.0, 2.0, [32, 64, 128, 256]


def families_for(info) -> tuple:
    return FLOW_FAMILIES if Requirement.FLOW_SCHEDULE in info.requires else ORDER_FAMILIES


def warm_grid(schedule, grid, order):
    """`grid` with its first interval split at lam_0 + H (h/H)^((p+1)/(j+1)), j = 1..p-1 (p = ceil(order), h the
    first interval's length in lam, H the whole span).

    A multistep method of order p starts with steps of orders 1, 2, ..., p-1; the j-th has a local error
    O(h_j^(j+1)), which with these lengths is O(h^(p+1)), below the method's global error O(h^p), so the measured
    slope is the method's own order. On a plain grid the start caps it: DPM-Solver++(3M) ends at order 2 past ~64
    steps (see `bench/conformance_table.py`)."""
    lam = schedule.lam(grid)
    H, h = lam[-1] - lam[0], lam[1] - lam[0]
    p = min(int(np.ceil(order)), 3)  # fourth-order starts: tinier steps only add rounding (LMS's Lagrange weights)
    offsets = [H * (h / H) ** min((p + 1) / (j + 1), 2.0) for j in range(1, p)]
    inserted = [float(schedule.t_of_lam(lam[0] + o)) for o in offsets if o < h]
    return np.concatenate([grid[:1], inserted, grid[1:]])


def order_grid(schedule, grid_name, steps, lam_0, lam_1, *, order=2, warm=True):
    t0, t1 = float(schedule.t_of_lam(lam_0)), float(schedule.t_of_lam(lam_1))
    grid = make_grid(grid_name, schedule, steps, t_start=t0, t_end=t1)
    return warm_grid(schedule, grid, order) if warm else grid


def gauss_start(schedule, t0, n=8, seed=0):
    a, s = schedule.alpha(t0), schedule.sigma(t0)
    return a * MEAN + np.sqrt(a**2 * STD**2 + s**2) * np.random.default_rng(seed).standard_normal((n, 2))


def exact_flow(schedule, x_T, grid):
    a, s = schedule.alpha(grid), schedule.sigma(grid)
    return gaussian_flow_map(x_T, MEAN, STD, a[0], s[0], a[-1], s[-1])


def mixture_flow(schedule, x_T, t_start, t_end):
    """The probability-flow map of the 2-D mixture from t_start to t_end, by scipy's DOP853 at rtol = atol = 1e-12
    on dy/dsigma_ve = (y - x0_hat(alpha y)) / sigma_ve, y = x / alpha (no closed form; used where Gaussian data
    would hide an order: the midpoint rule is superconvergent on the Gaussian flow, whose ODE is linear)."""
    from scipy.integrate import solve_ivp

    denoise = MIXTURE.denoiser(schedule)
    a0 = float(schedule.alpha(t_start))

    def f(s, y):
        t = float(schedule.t_of_sigma_ve(s))
        yy = y.reshape(x_T.shape)
        return ((yy - denoise(schedule.alpha(t) * yy, t)) / s).ravel()

    s0, s1 = float(schedule.sigma_ve(t_start)), float(schedule.sigma_ve(t_end))
    sol = solve_ivp(f, (s0, s1), (np.asarray(x_T) / a0).ravel(), method="DOP853", rtol=1e-12, atol=1e-12)
    return float(schedule.alpha(t_end)) * sol.y[:, -1].reshape(x_T.shape)


def consistency_function(schedule, t_end):
    """The exact consistency function of GAUSS: its probability-flow map from t to t_end."""
    a_end, s_end = schedule.alpha(t_end), schedule.sigma(t_end)

    def f(x, t):
        return gaussian_flow_map(x, MEAN, STD, schedule.alpha(t), schedule.sigma(t), a_end, s_end)

    return f


def clean_end_cases(info, steps, requires=None):
    """(label, schedule, grid) with a clean end (sigma = 0) on three families, started where the contract allows."""
    requires = info.requires if requires is None else requires
    if Requirement.FLOW_SCHEDULE in requires:
        specs = [("flow", "flow", {}, "uniform"), ("flow3", "flow", {"shift": 3.0}, "uniform")]
    else:
        specs = [("edm", "edm", {}, "karras"), ("linear", "linear", {}, "uniform"), ("flow", "flow", {}, "uniform")]
    out = []
    for label, name, params, grid_name in specs:
        schedule = make_schedule(name, **params)
        t_start = None
        if Requirement.ALPHA_START in requires and schedule.alpha(schedule.t_max) == 0:
            t_start = schedule.t_min + 0.98 * (schedule.t_max - schedule.t_min)
        out.append((f"{label}/{grid_name}", schedule, make_grid(grid_name, schedule, steps, t_start=t_start)))
    return out


def agreement_cases(info, steps=10):
    """(label, schedule, grid) for step-by-step agreement: a VP world ending at the clean end and an EDM world
    ending at a noisy time (flow samplers: two flow shifts)."""
    if Requirement.FLOW_SCHEDULE in info.requires:
        specs = [
            ("flow", make_schedule("flow"), "uniform", {}),
            ("flow3", make_schedule("flow", shift=3.0), "uniform", {"t_end": 0.05}),
        ]
    else:
        edm = make_schedule("edm")
        specs = [
            ("vp_cosine", make_schedule("vp_cosine"), "uniform", {"t_start": 0.99}),
            ("edm", edm, "karras", {} if Requirement.CLEAN_END in info.requires else {"t_end": 0.05}),
        ]
    return [(f"{label}/{g}", s, make_grid(g, s, steps, **o)) for label, s, g, o in specs]

"""diffspec.reference: the executable spec of diffusion models, in float64 NumPy, written to be read.

Every forward process is x_t = alpha_t x0 + sigma_t eps. The names below are used everywhere:

| code | math | meaning |
|---|---|---|
| `x` | x_t | current sample (`x_T` the start) |
| `x0` | x_0, x̂_0 | clean data or the denoiser's estimate (`x0_hat` when both are in scope) |
| `eps` | ε | standard normal noise |
| `v` | α ε − σ x_0 | velocity parameterization (Salimans & Ho 2022) |
| `u` | ε − x_0 | rectified-flow velocity |
| `alpha`, `sigma` | α_t, σ_t | x_t = α_t x_0 + σ_t ε |
| `lam` | λ_t = log(α_t/σ_t) | **half** the log-SNR (DPM-Solver's λ) |
| `logsnr` | log(α²/σ²) = 2λ | only where a paper uses it (VDM, Kingma & Gao) |
| `snr` | α²/σ² = e^{2λ} | |
| `sigma_ve` | σ/α = e^{−λ} | the EDM / k-diffusion noise level |
| `t`, `t_next` | | current and next grid time in sampling order |
| `h`, `r` | λ_next − λ, h_prev/h | step in λ (positive while denoising), multistep ratio |
| `grid` | | 1-D float64 array of times, noise -> data |
| `denoise` | (x, t) -> x̂_0 | the only access to a model |
"""

from diffspec.reference import (
    forward,
    grids,
    losses,
    metrics,
    noise,
    oracles,
    parameterizations,
    schedules,
    timesteps,
    vlb,
    weightings,
)
from diffspec.reference.forward import ddpm_posterior, ddpm_table, posterior, q_sample
from diffspec.reference.grids import GRIDS, make_grid
from diffspec.reference.losses import (
    consistency_loss,
    consistency_scalings,
    diffusion_loss,
    flow_matching_loss,
    hybrid_loss,
    input_perturbation,
    offset_noise,
    progressive_distillation_target,
    pseudo_huber,
)
from diffspec.reference.metrics import frechet_distance, kid, mmd, precision_recall, sliced_wasserstein
from diffspec.reference.oracles import GaussianMixture, gaussian_flow_map, standard_mixture_2d
from diffspec.reference.parameterizations import Parameterization
from diffspec.reference.schedules import SCHEDULES, make_schedule, schedule_from_dict, vp_alpha_sigma
from diffspec.reference.timesteps import TIMESTEPS, LossHistory
from diffspec.reference.vlb import discretized_gaussian_log_likelihood, gaussian_kl, vlb_bits_per_dim
from diffspec.reference.weightings import WEIGHTINGS

__all__ = [
    "GRIDS",
    "SCHEDULES",
    "TIMESTEPS",
    "WEIGHTINGS",
    "GaussianMixture",
    "LossHistory",
    "Parameterization",
    "consistency_loss",
    "consistency_scalings",
    "ddpm_posterior",
    "ddpm_table",
    "diffusion_loss",
    "discretized_gaussian_log_likelihood",
    "flow_matching_loss",
    "frechet_distance",
    "gaussian_flow_map",
    "gaussian_kl",
    "hybrid_loss",
    "input_perturbation",
    "kid",
    "make_grid",
    "make_schedule",
    "mmd",
    "offset_noise",
    "posterior",
    "precision_recall",
    "progressive_distillation_target",
    "pseudo_huber",
    "q_sample",
    "schedule_from_dict",
    "sliced_wasserstein",
    "standard_mixture_2d",
    "vlb_bits_per_dim",
    "vp_alpha_sigma",
    "forward",
    "grids",
    "losses",
    "metrics",
    "noise",
    "oracles",
    "parameterizations",
    "schedules",
    "timesteps",
    "vlb",
    "weightings",
]

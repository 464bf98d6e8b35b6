"""Interoperability with diffusers: read a `scheduler_config.json` and do what a diffusers pipeline loop does.

`from_diffusers(config, num_inference_steps=None, *, timesteps=None, sigmas=None, mu=None, **step_options)`
returns a `DiffusersPlan` whose `run(model, x_T, noise=None)` reproduces the pipeline loop

    latents = x_T * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        out = unet(scheduler.scale_model_input(latents, t), t)
        latents = scheduler.step(out, t, latents, **step_options).prev_sample

in float64 NumPy: `model(x, timestep)` receives exactly the scaled model input and the timestep value (a 0-d
numpy array, int64 or float32 as diffusers has it) the UNet would; its output is read according to the config's
`prediction_type`; `noise(shape)` (a numpy Generator or a callable) supplies the draws in the order diffusers
makes them. No torch is imported: this module is part of the numpy-only reference.

The betas come from `diffspec.reference.schedules` (`make_schedule` / `ExplicitBetas`), and the diffusers departures
from the papers are reproduced on purpose, each named where it happens:

- timestep spacings "leading" (+ `steps_offset`) and "trailing" (`grids.leading` / `grids.trailing`), and the
  multistep solvers' own "linspace", which takes N + 1 points and drops the last (so t = 0 is never a model time);
- DDIM and PNDM step to `t - T // N` whatever the spacing (diffusers #11347, #12633); with `set_alpha_to_one=False` the
  last step lands on alphabar[0], not the clean end;
- k-diffusion-style schedulers interpolate sigma = sqrt((1 - abar) / abar) *linearly* in the timestep (the
  reference interpolates log alpha); Karras sigmas are mapped back to (fractional) timesteps by interpolating
  log sigma, and the DPM-Solver family *rounds* them to integers while stepping with the exact sigmas;
- `final_sigmas_type="sigma_min"` ends at sigma(t=0) instead of the clean end;
- Euler-ancestral and DDIM with eta > 0 draw noise on their last step too (multiplied by 0);
- FlowMatchEuler applies `shift` twice to its last sigma (diffusers #13243): the grid is
  linspace(1, shift(1/T), N)
  shifted again;
- Euler / EDMEuler churn: the model is called before the churn noise is added and its output read at sigma_hat;
- PNDM's pseudo Runge-Kutta warm-up transfers every stage from the step's start and covers the grid's last three
  intervals above t_{N-4}; DEIS ends at alphabar[0] (and, with Karras sigmas, repeats the last sigma); TCD floors
  s = (1 - gamma) t_next in float32 and ends at alphabar[0]; the EDM schedulers start from sqrt(sigma_max^2 + 1) eps;
- DPMSolverSDE's Brownian-tree noise (torchsde) is reproduced in law, not draw for draw: two standard-normal
  draws per step combined into the tree's two correlated increments (see `_plan_dpm_sde`).

Classes: `SUPPORTED_CLASSES`; every other class of diffusers that has a `step` is in `REFUSED`, with the reason.
Step options (what a pipeline passes to `scheduler.step`): `STEP_OPTIONS`. Custom set_timesteps inputs:
`CUSTOM_INPUTS`; set_timesteps' other arguments (`num_train_timesteps`, `sampling_eps`,
`original_inference_steps`, `strength`): `SET_TIMESTEPS_OPTIONS`. Option values diffusers runs but no plan reproduces: `REFUSED_OPTIONS`, with the reasons.

The paper-faithful choices live in `grids` and `samplers`; this module exists to match diffusers' own loops. Where
diffusers' float32 values matter the plans reproduce them (its alphas_cumprod built as torch builds it, its float32
sigma table and stepping sigmas, DEIS's float32 coefficients: `_config.diffusers_alphas_cumprod`); the stepping is
float64, and the tests compare final samples at 1e-4 of max |x|.

Keys: every config key is either honoured (read and implemented, with the values listed per class in
`HONOURED`), inert (`INERT_ALWAYS`, or inert given other keys, e.g. `clip_sample_range` with `clip_sample`
False), or a key of another scheduler class at its no-op value (`FOREIGN_NOOP`). Anything else — unknown keys,
or known keys with values that have no reproducible result (each refusal says why) — raises ValueError naming the
key; nothing is silently dropped.

Layout: one module per diffusers family (`ddpm`: DDIM, DDPM, PNDM; `k_style`: the sigma-based Euler, Heun, KDPM2,
DPMSolverSDE, LMS; `dpm_solver`: DPMSolverMultistep/Singlestep, DEIS, UniPC; `dpm_variants`: CogVideoXDPM,
DPMSolverMultistepInverse, CosineDPMSolverMultistep; `sa_solver`: SASolver; `consistency`: LCM, TCD; `edm`; `flow`),
the config keys in `_config`, the plan in `_plan`, writing configs back in `writing`, and k-diffusion's sampler names
in `k_diffusion`.
"""

from diffspec.reference.interop._config import (
    FOREIGN_INERT,
    FOREIGN_NOOP,
    HONOURED,
    INERT_ALWAYS,
    REFUSED_OPTIONS,
    STEP_OPTIONS,
    _validate,
    schedule_from_config,
)
from diffspec.reference.interop._load import (
    CUSTOM_INPUTS,
    REFUSED,
    SET_TIMESTEPS_OPTIONS,
    SUPPORTED_CLASSES,
    from_diffusers,
)
from diffspec.reference.interop._plan import DiffusersPlan
from diffspec.reference.interop.k_diffusion import K_DIFFUSION_SAMPLERS, k_diffusion_grid, k_diffusion_sampler
from diffspec.reference.interop.writing import dataclass_replace_no_rescale, to_diffusers
from diffspec.reference.schedules import make_schedule

__all__ = [
    "CUSTOM_INPUTS",
    "FOREIGN_INERT",
    "FOREIGN_NOOP",
    "HONOURED",
    "INERT_ALWAYS",
    "K_DIFFUSION_SAMPLERS",
    "REFUSED",
    "REFUSED_OPTIONS",
    "SET_TIMESTEPS_OPTIONS",
    "STEP_OPTIONS",
    "SUPPORTED_CLASSES",
    "DiffusersPlan",
    "_validate",
    "dataclass_replace_no_rescale",
    "from_diffusers",
    "k_diffusion_grid",
    "k_diffusion_sampler",
    "make_schedule",
    "schedule_from_config",
    "to_diffusers",
]

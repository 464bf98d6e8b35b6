"""`to_diffusers`: a scheduler config diffusers loads, for a diffspec schedule."""

from diffspec.reference.schedules import (
    EDM,
    CosineBetas,
    Flow,
    LinearBetas,
    ScaledLinearBetas,
)

# Writing configs back
# --------------------------------------------------------------------------------------------------------


def to_diffusers(schedule, *, class_name=None, prediction_type="epsilon", **extra):
    """A scheduler_config dict diffusers loads with `from_config` for a diffspec schedule.

    Discrete VP schedules: LinearBetas / ScaledLinearBetas -> beta_schedule linear / scaled_linear; CosineBetas with
    the paper's s = 0.008 and cap 0.999 -> squaredcos_cap_v2; anything else (sigmoid, explicit, other cosine
    parameters) -> trained_betas; rescale_zero_snr -> rescale_betas_zero_snr. class_name defaults to
    DDIMScheduler. Flow -> FlowMatchEulerDiscreteScheduler with `shift`; EDM -> EDMEulerScheduler (sigma_min,
    sigma_max, sigma_data). Other schedules have no diffusers counterpart: ValueError. `extra` keys are added
    as given (e.g. timestep_spacing).
    """
    if getattr(schedule, "is_discrete", False):
        cfg = {
            "_class_name": class_name or "DDIMScheduler",
            "num_train_timesteps": schedule.num_steps,
            "prediction_type": prediction_type,
        }
        if isinstance(schedule, (LinearBetas, ScaledLinearBetas)):
            cfg.update(beta_schedule=schedule.name, beta_start=schedule.beta_start, beta_end=schedule.beta_end)
        elif isinstance(schedule, CosineBetas) and schedule.s == 0.008 and schedule.max_beta == 0.999:
            cfg.update(beta_schedule="squaredcos_cap_v2")
        else:
            base = dataclass_replace_no_rescale(schedule)
            cfg.update(trained_betas=[float(b) for b in base.betas()])
        if schedule.rescale_zero_snr:
            cfg["rescale_betas_zero_snr"] = True
        return {**cfg, **extra}
    if isinstance(schedule, Flow):
        return {
            "_class_name": class_name or "FlowMatchEulerDiscreteScheduler",
            "num_train_timesteps": 1000,
            "shift": schedule.shift,
            **extra,
        }
    if isinstance(schedule, EDM):
        return {
            "_class_name": class_name or "EDMEulerScheduler",
            "sigma_min": schedule.sigma_min,
            "sigma_max": schedule.sigma_max,
            "sigma_data": schedule.sigma_data,
            "prediction_type": prediction_type,
            **extra,
        }
    raise ValueError(
        f"schedule {type(schedule).__name__}: diffusers has no scheduler config for it; expected a discrete VP "
        "(betas), flow or EDM schedule"
    )


def dataclass_replace_no_rescale(schedule):
    """The same discrete schedule without the zero-terminal-SNR rescale (diffusers applies it to trained_betas)."""
    import dataclasses

    return dataclasses.replace(schedule, rescale_zero_snr=False)

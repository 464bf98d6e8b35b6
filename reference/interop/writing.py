"""`to_diffusers`: a scheduler config diffusers loads, for a diffspec schedule.

Every key written is one the target class reads (`HONOURED[class]` lists exactly the parameters of each class's
__init__; a test checks it against the installed diffusers), so nothing is written that diffusers would load and
then ignore: a zero-SNR rescale written for a class without `rescale_betas_zero_snr` would silently give other
alphas_cumprod (up to 3e-3 off), and is refused instead.
"""

import dataclasses

from diffspec.reference import _checks
from diffspec.reference.interop._config import HONOURED
from diffspec.reference.parameterizations import Parameterization, parse
from diffspec.reference.schedules import EDM, VE, CosineBetas, Flow, LinearBetas, ScaledLinearBetas

# diffusers' prediction_type for each parameterization (score has none).
PREDICTION_TYPE = {
    Parameterization.EPS: "epsilon",
    Parameterization.X0: "sample",
    Parameterization.V: "v_prediction",
    Parameterization.FLOW: "flow_prediction",
}

# Classes written but not read back by `from_diffusers` (their keys, the parameters of __init__): none left.
WRITE_ONLY: dict[str, tuple[str, ...]] = {}


def _prediction(prediction_type):
    """diffusers' name for a diffspec or diffusers parameterization name."""
    param = parse(prediction_type)
    if param not in PREDICTION_TYPE:
        raise ValueError(f"prediction_type={prediction_type!r}: diffusers has no prediction type for it")
    return PREDICTION_TYPE[param]


def _checked(cfg):
    """cfg, after checking that its class reads every key in it."""
    name = cfg["_class_name"]
    keys = WRITE_ONLY.get(name) or tuple(_checks.lookup(HONOURED, name, what="diffusers scheduler class"))
    ignored = sorted(set(cfg) - set(keys) - {"_class_name"})
    if ignored:
        raise ValueError(
            f"config key {ignored[0]!r}={cfg[ignored[0]]!r}: {name} does not read it (diffusers would load the "
            f"config and ignore it); its keys are {sorted(keys)}"
        )
    return cfg


def to_diffusers(schedule, *, class_name: str | None = None, prediction_type: str | None = None, **extra) -> dict:
    """A scheduler_config dict diffusers loads with `from_config` for a diffspec schedule.

    Discrete VP schedules: LinearBetas / ScaledLinearBetas -> beta_schedule linear / scaled_linear; CosineBetas with
    the paper's s = 0.008 and cap 0.999 -> squaredcos_cap_v2; anything else (sigmoid, explicit, other cosine
    parameters) -> trained_betas; rescale_zero_snr -> rescale_betas_zero_snr. class_name defaults to
    DDIMScheduler. Flow -> FlowMatchEulerDiscreteScheduler with `shift`; EDM -> EDMEulerScheduler (sigma_min,
    sigma_max, sigma_data); VE -> ScoreSdeVeScheduler (sigma_min, sigma_max; prediction_type None or score).
    Other schedules have no diffusers counterpart: ValueError.

    prediction_type takes diffspec's names (eps, x0, v, flow) or diffusers' and is written as diffusers' (epsilon,
    sample, v_prediction, flow_prediction); None writes the class's default. `extra` keys (e.g. timestep_spacing)
    are added as given. Any key the class does not read (an extra, the zero-SNR rescale, a prediction type for a
    class without one) raises ValueError.
    """
    if isinstance(schedule, VE):
        if prediction_type is not None and parse(prediction_type) != Parameterization.SCORE:
            raise ValueError(f"prediction_type={prediction_type!r}: ScoreSdeVeScheduler's model predicts the score")
        return _checked(
            {
                "_class_name": class_name or "ScoreSdeVeScheduler",
                "sigma_min": schedule.sigma_min,
                "sigma_max": schedule.sigma_max,
                **extra,
            }
        )
    pred = None if prediction_type is None else _prediction(prediction_type)
    if getattr(schedule, "is_discrete", False):
        cfg = {"_class_name": class_name or "DDIMScheduler", "num_train_timesteps": schedule.num_steps}
        if isinstance(schedule, (LinearBetas, ScaledLinearBetas)):
            cfg.update(beta_schedule=schedule.name, beta_start=schedule.beta_start, beta_end=schedule.beta_end)
        elif isinstance(schedule, CosineBetas) and schedule.s == 0.008 and schedule.max_beta == 0.999:
            cfg.update(beta_schedule="squaredcos_cap_v2")
        else:
            base = dataclass_replace_no_rescale(schedule)
            cfg.update(trained_betas=[float(b) for b in base.betas()])
        if schedule.rescale_zero_snr:
            cfg["rescale_betas_zero_snr"] = True
        if "snr_shift_scale" in HONOURED.get(cfg["_class_name"], ()):
            cfg["snr_shift_scale"] = 1.0  # CogVideoX shifts the betas' SNR by default (3.0): off, so abar is kept
    elif isinstance(schedule, Flow):
        cfg = {
            "_class_name": class_name or "FlowMatchEulerDiscreteScheduler",
            "num_train_timesteps": 1000,
            "shift": schedule.shift,
        }
        if pred == "flow_prediction" and "prediction_type" not in HONOURED.get(cfg["_class_name"], ()):
            pred = None  # FlowMatch classes predict the velocity without a prediction_type key
    elif isinstance(schedule, EDM):
        cfg = {
            "_class_name": class_name or "EDMEulerScheduler",
            "sigma_min": schedule.sigma_min,
            "sigma_max": schedule.sigma_max,
            "sigma_data": schedule.sigma_data,
        }
    else:
        raise ValueError(
            f"schedule {type(schedule).__name__}: diffusers has no scheduler config for it; expected a discrete VP "
            "(betas), flow, EDM or VE schedule"
        )
    if pred is not None:
        cfg["prediction_type"] = pred
    return _checked({**cfg, **extra})


def dataclass_replace_no_rescale(schedule):
    """The same discrete schedule without the zero-terminal-SNR rescale (diffusers applies it to trained_betas)."""
    return dataclasses.replace(schedule, rescale_zero_snr=False)

"""diffusers schedulers driven as their pipelines drive them, on exact models: what `check_scheduler` compares with
`diffspec.reference.interop.from_diffusers`.

- `model_for(plan)`: the network a scheduler's pipeline expects, made exact from the Gaussian-mixture oracle: the
  config's prediction type at the schedule time the timestep names, with the class's own input and time scalings
  (EDM's c_in and c_noise = log(sigma) / 4, CosineDPM's atan(sigma) 2 / pi, CMStochasticIterative's 250 log(sigma)
  and boundary-condition output, MiniMax-H3's 1 - t and negated velocity, a learned variance channel, sCM's flow
  transformer, a flow map's mean velocity, ScoreSdeVe's score).
- `run_pipeline(scheduler, model, x_T, noise, n=...)`: the loop of the pipeline that drives the class, the draws of
  its `randn_tensor` (and Brownian-tree noise samplers) taken from `noise`; returns the final sample and the
  timesteps the model saw. Most classes take the generic loop (`scale_model_input`, `step(out, t, x)`); the classes
  whose `step` takes more than that, or that their pipeline drives with its own loop, have theirs in `LOOPS`.

Torch is imported when a loop runs; diffusers only through the scheduler instance given.
"""

import contextlib
import dataclasses
import math
import sys

import numpy as np
from diffspec.reference.oracles import standard_mixture_2d
from diffspec.reference.parameterizations import output_from_x0
from diffspec.reference.schedules import EDM, Flow

MIX = standard_mixture_2d()
PARAM = {"epsilon": "eps", "sample": "x0", "v_prediction": "v", "flow_prediction": "flow"}
# HeliosDMD's step reshapes its sigmas for 5-d video latents
VIDEO_CLASSES = ("HeliosDMDScheduler",)


def latent_shape(class_name: str, batch: int) -> tuple[int, ...]:
    """A latent shape for 2-D data that `class_name`'s step accepts: (batch, 2, 1, 1), 5-d for video classes."""
    return (batch, 2, 1, 1, 1) if class_name in VIDEO_CLASSES else (batch, 2, 1, 1)


# ------------------------------------------------------------------------------------------------------- models
def oracle_model(schedule, prediction_type, time_of, mixture=MIX):
    """model(x, timestep): the mixture's exact x0 at t = time_of(timestep), in `prediction_type`."""
    den = mixture.denoiser(schedule)
    param = PARAM[prediction_type]

    def model(x, timestep):
        t = time_of(float(np.asarray(timestep)))
        flat = x.reshape(x.shape[0], -1)
        x0 = den(flat, t)
        return output_from_x0(param, x0, flat, schedule.alpha(t), schedule.sigma(t)).reshape(x.shape)

    return model


def _preconditioned(schedule, prediction_type, sigma_of, mixture, lo=0.0):
    """An EDM-preconditioned network: input c_in x = x / sqrt(s^2 + sd^2), time c_noise with s = sigma_of(c_noise),
    output F with x0 = c_skip x + c_out F (c_out negated for v_prediction; `lo` > 0 is the consistency models'
    boundary-condition scaling, c_skip = sd^2 / ((s - lo)^2 + sd^2), c_out = (s - lo) sd / sqrt(s^2 + sd^2))."""
    # s from a float32 c_noise may pass sigma_max by a few ulps: widen the oracle's domain
    den = mixture.denoiser(dataclasses.replace(schedule, sigma_max=2 * schedule.sigma_max))
    sd, sign = schedule.sigma_data, (-1.0 if prediction_type == "v_prediction" else 1.0)

    def model(x_in, timestep):
        s = sigma_of(np.float64(np.asarray(timestep, dtype=np.float64)))
        x = x_in * np.sqrt(s**2 + sd**2)
        x0 = den(x.reshape(x.shape[0], -1), s).reshape(x.shape)
        c_skip = sd**2 / ((s - lo) ** 2 + sd**2)
        c_out = (s - lo) * sd / np.sqrt(s**2 + sd**2) * sign
        return (x0 - c_skip * x) / c_out

    return model


def edm_oracle_model(schedule, prediction_type, mixture=MIX):
    """The EDM schedulers' network: timestep c_noise = log(sigma) / 4."""
    return _preconditioned(schedule, prediction_type, lambda c: float(np.exp(4.0 * c)), mixture)


def cosine_oracle_model(schedule, prediction_type, mixture=MIX):
    """CosineDPMSolverMultistep's network: timestep atan(sigma) 2 / pi."""
    return _preconditioned(schedule, prediction_type, lambda c: math.tan(float(c) * math.pi / 2), mixture)


def consistency_oracle_model(schedule, mixture=MIX):
    """CMStochasticIterative's network: timestep 250 log(sigma), the boundary-condition scalings at sigma_min."""
    return _preconditioned(
        schedule, "epsilon", lambda c: float(np.exp(c / 250.0)), mixture, lo=float(schedule.sigma_min)
    )


def with_variance_output(model, variance_type):
    """A learned-variance network: the prediction, then a variance output of the same shape along axis 1 (v in
    [-1, 1] for learned_range, a positive variance for learned)."""

    def wrapped(x, timestep):
        v = np.tanh(0.3 * x + 1e-3 * float(np.asarray(timestep)))
        v = v if variance_type == "learned_range" else 1e-3 * (1.5 + v)
        return np.concatenate([model(x, timestep), v], axis=1)

    return wrapped


def flow_map_model(T=1000, mixture=MIX):
    """A flow-map network: the mean velocity over [r, t] by the midpoint rule on the exact velocity of the mixture's
    flow (exact as r -> t; a deterministic function of (x, t, r) either way)."""
    u = oracle_model(Flow(), "flow_prediction", lambda ts: ts / T, mixture)

    def model(x, t, r):
        t, r = float(np.asarray(t)), float(np.asarray(r))
        x_mid = x + (r - t) / 2 / T * u(x, np.asarray(t))
        return u(x_mid, np.asarray((t + r) / 2))

    return model


def score_model(mixture=MIX):
    """ScoreSdeVe's network: the exact score of the mixture under noise sigma (alpha = 1)."""

    def score(x, sigma):
        flat = x.reshape(x.shape[0], -1)
        return mixture.score(flat, 1.0, float(sigma)).reshape(x.shape)

    return score


def model_for(plan, mixture=MIX):
    """The exact network a pipeline of `plan`'s class feeds its scheduler (see the module docstring)."""
    name = plan.class_name
    if name == "CMStochasticIterativeScheduler":
        return consistency_oracle_model(plan.schedule, mixture)
    if name == "CosineDPMSolverMultistepScheduler":
        return cosine_oracle_model(plan.schedule, plan.prediction_type, mixture)
    if name == "MiniMaxH3Scheduler":  # time 1 - sigma, output u = x0 - eps (minus the flow velocity)
        flow = oracle_model(plan.schedule, "flow_prediction", lambda t: 1.0 - t, mixture)
        return lambda x, t: -flow(x, t)
    if name == "SCMScheduler":  # the flow transformer sees t = sin s / (cos s + sin s), up to 1 + 4e-6
        return oracle_model(Flow(), "flow_prediction", lambda t: min(t, 1.0), mixture)
    if name == "FlowMapEulerDiscreteScheduler":
        return flow_map_model(plan.config["num_train_timesteps"], mixture)
    if name == "ScoreSdeVeScheduler":
        return score_model(mixture)
    if getattr(plan, "learned_variance", False):
        return with_variance_output(
            oracle_model(plan.schedule, plan.prediction_type, lambda ts: ts, mixture), plan.config["variance_type"]
        )
    if isinstance(plan.schedule, EDM):
        return edm_oracle_model(plan.schedule, plan.prediction_type, mixture)
    if isinstance(plan.schedule, Flow):
        # the DPM-Solver family with use_flow_sigmas reads any prediction type on the flow process
        dpm = ("DPMSolverMultistep", "DPMSolverSinglestep", "UniPCMultistep", "DEISMultistep")  # and the inverse
        pred = plan.prediction_type if plan.config.get("use_flow_sigmas") and name.startswith(dpm) else None
        pred = pred if pred in ("epsilon", "sample", "v_prediction") else "flow_prediction"
        return oracle_model(plan.schedule, pred, lambda ts: ts / 1000.0, mixture)
    if plan.config.get("timestep_type") == "continuous" and plan.prediction_type == "v_prediction":
        # the network sees c_noise = log(sigma) / 4: read it back as the training time with that sigma (clipped)
        top = plan.schedule.num_steps - 1
        return oracle_model(
            plan.schedule,
            plan.prediction_type,
            lambda c: float(np.clip(plan.schedule.t_of_sigma_ve(np.exp(4.0 * c)), 0, top)),
            mixture,
        )
    return oracle_model(plan.schedule, plan.prediction_type, lambda ts: ts, mixture)


# ------------------------------------------------------------------------------------------------------- noise
@contextlib.contextmanager
def routed_randn(source, dtype=None, scheduler=None):
    """Route `randn_tensor` of every loaded diffusers scheduler module, and of the modules that define
    `scheduler`'s class and its bases (a custom subclass in the user's own module), to `source(shape)` (draws in
    `dtype`, else the dtype asked for, else float32)."""
    import torch

    names = [n for n in list(sys.modules) if n.startswith("diffusers.schedulers.")]
    if scheduler is not None:
        names += [c.__module__ for c in type(scheduler).__mro__ if c.__module__ != "builtins"]
    modules = {id(m): m for m in (sys.modules.get(n) for n in names) if m is not None}.values()
    saved = [(m, m.randn_tensor) for m in modules if hasattr(m, "randn_tensor")]
    forced = dtype

    def fake(shape, generator=None, device=None, dtype=None, layout=None):
        return torch.from_numpy(source(tuple(shape))).to(forced or dtype or torch.float32)

    for m, _ in saved:
        m.randn_tensor = fake
    try:
        yield
    finally:
        for m, fn in saved:
            m.randn_tensor = fn


class BrownianPath:
    """Stands in for the torchsde Brownian tree of DPMSolverSDE / CosineDPMSolverMultistep: one Brownian path W in
    the sampler's noise variable, built from `source` (a new point extends past the known ones, or is a Brownian
    bridge between two of them), so noise_sampler(a, b) = (W(b) - W(a)) / sqrt|b - a| has the tree's joint law and
    takes one draw per new point, in the order asked."""

    def __init__(self, source, shape, dtype=None):
        self.source, self.shape, self.dtype, self.known = source, tuple(shape), dtype, {}

    def _at(self, s):
        if s in self.known:
            return self.known[s]
        if not self.known:
            w = np.zeros(self.shape)
        else:
            lower = [k for k in self.known if k < s]
            upper = [k for k in self.known if k > s]
            if lower and upper:
                lo, hi = max(lower), min(upper)
                mean = self.known[lo] + (s - lo) / (hi - lo) * (self.known[hi] - self.known[lo])
                w = mean + np.sqrt((s - lo) * (hi - s) / (hi - lo)) * self.source(self.shape)
            else:
                near = max(lower) if lower else min(upper)
                w = self.known[near] + np.sqrt(abs(s - near)) * self.source(self.shape)
        self.known[s] = w
        return w

    def __call__(self, sigma, sigma_next):
        import torch

        a, b = float(sigma), float(sigma_next)
        self._at(a)
        out = torch.from_numpy((self._at(b) - self._at(a)) / np.sqrt(abs(b - a)))
        return out.to(self.dtype or torch.float32)


# ------------------------------------------------------------------------------------------------------- loops
def _call(model, x, *times):
    import torch

    return torch.from_numpy(model(x.double().numpy(), *(np.asarray(t.numpy()) for t in times))).to(x.dtype)


def unclip_loop(sched, model, latents, noise, custom):
    """UnCLIPPipeline: prev_timestep is the next timestep, None on the last step."""
    sched.set_timesteps(custom["n"])
    ts = sched.timesteps
    with routed_randn(noise, scheduler=sched):
        for i, t in enumerate(ts):
            prev = ts[i + 1] if i + 1 < len(ts) else None
            latents = sched.step(_call(model, latents, t), t, latents, prev_timestep=prev).prev_sample
    return latents, ts[:]


def wuerstchen_loop(sched, model, latents, noise, custom):
    """WuerstchenPriorPipeline / StableCascadePriorPipeline: all times but the last, as a batch."""
    if custom.get("timesteps") is not None:
        sched.set_timesteps(timesteps=custom["timesteps"])
    else:
        sched.set_timesteps(custom["n"])
    ts = sched.timesteps[:-1]
    with routed_randn(noise, scheduler=sched):
        for t in ts:
            r = t.expand(latents.shape[0])
            latents = sched.step(_call(model, latents, t), r, latents).prev_sample
    return latents, ts


def ltx_loop(sched, model, latents, noise, custom):
    """A loop over the timesteps; with custom sigmas over timesteps[:-1], as LTX's pipeline."""
    import torch

    if custom.get("sigmas") is not None or custom.get("timesteps") is not None:
        given = {k: torch.tensor(custom[k], dtype=torch.float32) for k in ("sigmas", "timesteps") if k in custom}
        sched.set_timesteps(**given)
        ts = sched.timesteps[:-1]
    else:
        sched.set_timesteps(custom["n"], mu=custom.get("mu"))
        ts = sched.timesteps
    with routed_randn(noise, scheduler=sched):
        for t in ts:
            latents = sched.step(_call(model, latents, t), t, latents).prev_sample
    return latents, ts


def scm_loop(sched, model, latents, noise, custom):
    """SanaSprintPipeline: latents scaled by sigma_data, the flow transformer wrapped into TrigFlow, x0 / sigma_d."""
    import torch

    sd = sched.config.sigma_data
    if custom.get("timesteps") is not None:
        sched.set_timesteps(len(custom["timesteps"]) - 1, timesteps=custom["timesteps"], max_timesteps=None,
                            intermediate_timesteps=None)  # fmt: skip
    else:
        n = custom["n"]
        sched.set_timesteps(n, intermediate_timesteps=1.3 if n == 2 else None)
    latents = latents * sd
    seen, denoised = [], latents
    with routed_randn(noise, scheduler=sched):
        for t in sched.timesteps[:-1]:
            tf = torch.sin(t) / (torch.cos(t) + torch.sin(t))
            seen.append(tf.item())
            x_in = latents / sd * torch.sqrt(tf**2 + (1 - tf) ** 2)
            u = _call(model, x_in, tf)
            pred = ((1 - 2 * tf) * x_in + (1 - 2 * tf + 2 * tf**2) * u) / torch.sqrt(tf**2 + (1 - tf) ** 2)
            latents, denoised = sched.step(pred.float() * sd, t, latents, return_dict=False)
    return denoised / sd, torch.tensor(seen)


def flow_map_loop(sched, model, latents, noise, custom):
    """AnyFlowPipeline with use_mean_velocity=True: the model takes (t, r); a step with t == r is skipped."""
    import torch

    sched.set_timesteps(custom.get("n"), sigmas=custom.get("sigmas"), timesteps=custom.get("timesteps"))
    seen = []
    for i, t in enumerate(sched.timesteps):
        r = sched.sigmas[i + 1] * sched.config.num_train_timesteps
        if t == r:
            continue
        seen.append(t.item())
        latents = sched.step(_call(model, latents, t, r), t, latents).prev_sample
    return latents, torch.tensor(seen)


def _array_or_none(values):  # Helios's set_timesteps needs a numpy array (a list would be repeated by `* T`)
    return None if values is None else np.asarray(values)


def helios_loop(sched, model, latents, noise, custom):
    """HeliosPipeline's loop over one chunk."""
    sched.set_timesteps(custom["n"], sigmas=_array_or_none(custom.get("sigmas")), mu=custom.get("mu"))
    for t in sched.timesteps:
        latents = sched.step(_call(model, latents, t), t, latents).prev_sample
    return latents, sched.timesteps


def helios_dmd_loop(sched, model, latents, noise, custom):
    """HeliosPyramidPipeline with one stage and a distilled model: int64 model timesteps, the stage's start latents
    as the re-noising tensor."""
    import torch

    sched.set_timesteps(custom["n"], 0, sigmas=_array_or_none(custom.get("sigmas")), mu=custom.get("mu"))
    ts, start = sched.timesteps, latents
    for i, t in enumerate(ts):
        out = _call(model, latents, t.to(torch.int64))
        latents = sched.step(
            out, t, latents, cur_sampling_step=i, dmd_noisy_tensor=start, dmd_sigmas=sched.sigmas,
            dmd_timesteps=ts, all_timesteps=ts, return_dict=False,
        )[0]  # fmt: skip
    return latents, ts.to(torch.int64)


def score_sde_ve_loop(sched, model, latents, noise, custom):
    """ScoreSdeVePipeline: `correct_steps` Langevin corrections, then a predictor step, on the score model; the
    mean of the last step (the pipeline's output before its clamp to [0, 1]). The model sees sigma."""
    import torch

    sched.set_timesteps(custom["n"], **{k: v for k, v in custom.items() if k != "n"})
    sched.set_sigmas(custom["n"])
    sample, mean = latents, latents
    with routed_randn(noise, scheduler=sched):
        for i, t in enumerate(sched.timesteps):
            sigma_t = sched.sigmas[i] * torch.ones(latents.shape[0])
            for _ in range(sched.config.correct_steps):
                sample = sched.step_correct(_call(model, sample, sigma_t[0]), sample).prev_sample
            output = sched.step_pred(_call(model, sample, sigma_t[0]), t, sample)
            sample, mean = output.prev_sample, output.prev_sample_mean
    return mean, sched.sigmas


LOOPS = {
    "UnCLIPScheduler": unclip_loop,
    "DDPMWuerstchenScheduler": wuerstchen_loop,
    "LTXEulerAncestralRFScheduler": ltx_loop,
    "SCMScheduler": scm_loop,
    "FlowMapEulerDiscreteScheduler": flow_map_loop,
    "HeliosScheduler": helios_loop,
    "HeliosDMDScheduler": helios_dmd_loop,
    "ScoreSdeVeScheduler": score_sde_ve_loop,
}
# set_timesteps takes these inputs as a tensor (EDMEuler) or an array (UniPC) only
_TENSOR_INPUTS = {"EDMEulerScheduler": ("sigmas",)}
_ARRAY_INPUTS = {"UniPCMultistepScheduler": ("sigmas",)}


def generic_loop(sched, model, latents, noise, custom, *, class_name, step_kwargs=None, float64=False):
    """The loop most pipelines run: `set_timesteps(n, **inputs)`, latents * init_noise_sigma, then per timestep
    `scale_model_input` and `step(out, t, latents)`. CogVideoXDPM's step takes the previous x0 and grid time, as the CogVideoX pipeline calls
    it; DPMSolverSDE's and CosineDPM's Brownian trees become a `BrownianPath` fed from `noise`; the LCM pipelines
    return the last step's denoised sample. float64=True runs on float64 tensors, the scheduler's sigmas (CogVideoXDPM:
    alphas_cumprod) promoted from the float32 values diffusers computed."""
    import torch

    inputs = {k: v for k, v in custom.items() if k != "n"}
    for key in _TENSOR_INPUTS.get(class_name, ()):
        if key in inputs:
            inputs[key] = torch.tensor(inputs[key], dtype=torch.float64)
    for key in _ARRAY_INPUTS.get(class_name, ()):
        if key in inputs:
            inputs[key] = np.asarray(inputs[key])
    sched.set_timesteps(custom.get("n"), **inputs)
    dtype = torch.float64 if float64 else torch.float32
    if float64 and class_name == "CogVideoXDPMScheduler":
        sched.alphas_cumprod = sched.alphas_cumprod.double()
        sched.final_alpha_cumprod = sched.final_alpha_cumprod.double()
    elif float64:
        sched.sigmas = sched.sigmas.double()
    if class_name in ("DPMSolverSDEScheduler", "CosineDPMSolverMultistepScheduler"):
        sched.noise_sampler = BrownianPath(noise, latents.shape, dtype)
    latents = latents.to(dtype) * getattr(
        sched, "init_noise_sigma", 1.0
    )  # some classes know it only after set_timesteps
    timesteps, old_x0, result = [], None, None
    with routed_randn(noise, dtype if float64 else None, scheduler=sched):
        for i, t in enumerate(sched.timesteps):
            timesteps.append(t.item())
            inp = sched.scale_model_input(latents, t) if hasattr(sched, "scale_model_input") else latents
            out = torch.from_numpy(np.asarray(model(inp.double().numpy(), t.numpy()))).to(dtype)
            if class_name == "CogVideoXDPMScheduler":
                back = sched.timesteps[i - 1] if i > 0 else None
                latents, old_x0 = sched.step(out, old_x0, t, back, latents, **(step_kwargs or {}), return_dict=False)
            else:
                result = sched.step(out, t, latents, **(step_kwargs or {}))
                latents = result.prev_sample
    if class_name == "LCMScheduler" and result is not None:  # the LCM pipelines return the last step's denoised
        latents = result.denoised
    return latents, torch.tensor(timesteps, dtype=torch.float64)


def run_pipeline(
    scheduler, model, x_T, noise, n=None, *, class_name=None, set_timesteps=None, step_kwargs=None, float64=False
):
    """(final sample, model timesteps) as float64 numpy: `scheduler` driven by its pipeline's loop (`LOOPS`, else
    `generic_loop`) from x_T * init_noise_sigma, with `model(x, timestep)` on numpy and the draws from `noise`.
    class_name: the diffusers class whose loop to run (default: the scheduler's own class name); set_timesteps: its
    other inputs (custom timesteps, sigmas, mu, ...); step_kwargs: keyword options of `step`."""
    import torch

    name = class_name or type(scheduler).__name__
    x = torch.from_numpy(np.asarray(x_T, dtype=np.float64)).to(torch.float64 if float64 else torch.float32)
    custom = {"n": n, **(set_timesteps or {})}
    if name in LOOPS:
        out, ts = LOOPS[name](scheduler, model, x * getattr(scheduler, "init_noise_sigma", 1.0), noise, custom)
    else:
        out, ts = generic_loop(
            scheduler, model, x, noise, custom, class_name=name, step_kwargs=step_kwargs, float64=float64
        )
    return out.double().numpy(), np.asarray(ts.double().numpy() if hasattr(ts, "double") else ts, dtype=np.float64)

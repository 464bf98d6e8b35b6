"""Validation sampling: draw samples from the (EMA) model with one of the trainer's samplers, write them to
OUTPUT_DIR/samples/step-STEP.png (and .npy), and hand them to the trackers.

The starting noise comes from a fixed seed, so the grids of successive steps are comparable; sampling runs
inside `torch.random.fork_rng`, so validating never changes the training run's random streams.
"""

import math
from pathlib import Path

import numpy as np
import torch
from diffspec.trainer import images

# Validation draws all its samples in one batch and keeps them (and a picture of them) in memory, after training:
# sizes that cannot fit are refused before the first step, not discovered at the end of a run.
MAX_VALIDATION_SAMPLES = 2**16
MAX_VALIDATION_VALUES = 2**24  # samples x values per sample: 64 MiB per float32 tensor of the batch
MAX_VALIDATION_STEPS = 10_000


def check_validation_size(num_samples: int, steps: int, shape: tuple) -> None:
    """Raise a ValueError naming --num-validation-samples or --num-inference-steps when validation would exceed the
    limits above for samples of `shape`."""
    per_sample = math.prod(shape)
    limit = max(1, min(MAX_VALIDATION_SAMPLES, MAX_VALIDATION_VALUES // per_sample))
    if num_samples > limit:
        why = (
            f"{MAX_VALIDATION_SAMPLES} samples"
            if limit == MAX_VALIDATION_SAMPLES
            else f"{MAX_VALIDATION_VALUES} values in one batch, samples of shape {tuple(shape)}"
        )
        raise ValueError(f"--num-validation-samples={num_samples}: expected at most {limit} ({why})")
    if steps > MAX_VALIDATION_STEPS:
        raise ValueError(f"--num-inference-steps={steps}: expected at most {MAX_VALIDATION_STEPS}")


def sampler_and_grid(name: str, schedule, steps: int):
    """(sampler function, grid) for validation: the named sampler on the schedule's default grid (the runtime's)."""
    from diffspec.trainer.grids import default_grid, make_grid
    from diffspec.trainer.samplers import SAMPLERS

    if name not in SAMPLERS:
        raise ValueError(f"unknown --validation-sampler {name!r}: expected one of {sorted(SAMPLERS)}")
    return SAMPLERS[name], make_grid(default_grid(schedule), schedule, steps)


@torch.no_grad()
def sample(
    model,
    schedule,
    parameterization: str,
    shape: tuple,
    *,
    n: int,
    sampler: str = "dpmpp_2m",
    steps: int = 20,
    seed: int = 0,
    y: torch.Tensor | None = None,
    guidance_scale: float = 1.0,
    null_class: int | None = None,
    device="cpu",
    variance: str | None = None,
) -> torch.Tensor:
    """n samples (model space) from `model` with one of the twin's samplers; CFG when guidance_scale != 1
    (diffusers' convention: out = out_u + w (out_c - out_u), Ho & Salimans 2022 eq. 6 with w = 1 + w_paper).

    A learned-variance model (2C outputs): every sampler uses the mean half; `variance` (ddpm only) is passed on,
    and variance="learned_range" feeds the variance half (the conditional one under CFG) to ddpm as `variance_v`,
    taken from the same model call as the mean when possible (no second call per step)."""
    from diffspec.trainer.parameterizations import x0_from_output

    fn, grid = sampler_and_grid(sampler, schedule, steps)
    gen = torch.Generator(device=device).manual_seed(seed)
    t0 = torch.as_tensor(grid[0], dtype=torch.float64)
    x_T = torch.randn((n, *shape), generator=gen, device=device) * float(schedule.sigma(t0))

    if variance is not None and sampler != "ddpm":
        raise ValueError(f"variance={variance!r} is a ddpm option; the sampler is {sampler!r}")
    last: dict[str, torch.Tensor | None] = {}  # the variance half of the latest model call, keyed by the input tensor

    def model_out(x, t):
        t = t.to(torch.float32)
        if y is not None and guidance_scale != 1.0:
            out = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, torch.full_like(y, null_class)]))
            oc, ou = out.float().chunk(2)
            var = oc[:, x.shape[1] :] if oc.shape[1] == 2 * x.shape[1] else None
            out = ou + guidance_scale * (oc - ou)
        else:
            out = model(x, t, y).float()
            var = out[:, x.shape[1] :] if out.shape[1] == 2 * x.shape[1] else None
        last.clear()
        last.update(x=x, t=t, var=var)
        return out[:, : x.shape[1]] if out.shape[1] != x.shape[1] else out, t

    def denoise(x, t):
        out, t = model_out(x, t)
        return x0_from_output(parameterization, out, x, schedule.alpha(t), schedule.sigma(t))

    def variance_v(x, t):
        if not (last.get("x") is x and torch.equal(last["t"], t.to(torch.float32))):
            model_out(x, t)
        if last["var"] is None:
            raise ValueError("variance='learned_range' needs a learned-variance model (2C output channels)")
        return last["var"]

    options: dict[str, object] = {}
    if variance is not None:
        options["variance"] = variance
        if variance == "learned_range":
            options["variance_v"] = variance_v
    return fn(denoise, x_T, grid, schedule, noise=gen, **options)


def validate(model, schedule, parameterization: str, ds, cfg, output_dir, step: int, device) -> tuple[Path, np.ndarray]:
    """Write OUTPUT_DIR/samples/step-STEP.png (when the data has a picture) and .npy from `model` (the EMA one
    when there is one); returns (the .npy path, the samples in model space)."""
    was_training = model.training
    model.eval()
    n = cfg.num_validation_samples
    y = torch.arange(n, device=device) % ds.num_classes if cfg.class_conditional else None
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        x = sample(
            model,
            schedule,
            parameterization,
            ds.shape,
            n=n,
            sampler=cfg.validation_sampler,
            steps=cfg.num_inference_steps,
            seed=cfg.seed + 12345,
            y=y,
            guidance_scale=cfg.validation_guidance_scale,
            null_class=ds.num_classes,
            device=device,
            variance="learned_range" if cfg.learned_variance and cfg.validation_sampler == "ddpm" else None,
        )
    model.train(was_training)
    out = Path(output_dir) / "samples"
    out.mkdir(parents=True, exist_ok=True)
    samples = x.float().cpu().numpy()
    if images.has_picture(ds.kind, ds.shape):
        images.write_samples_png(samples, out / f"step-{step:07d}.png", ds.kind)
    path = out / f"step-{step:07d}.npy"
    np.save(path, samples)
    return path, samples

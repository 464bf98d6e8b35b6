"""The training loop: AdamW with warm-up and a constant/cosine learning rate, EMA with warm-up, gradient
clipping and accumulation, bf16 autocast on CUDA, condition dropout for classifier-free guidance, any
parameterization / schedule / weighting / t-distribution of the torch twin's registries, atomic checkpoints with
exact resume, a tqdm bar, a JSONL log and PNG grids of EMA samples. Several GPUs or hosts via torchrun (DDP when
WORLD_SIZE > 1: each rank its own data shard and seed; checkpoints, logs and images from rank 0).

Everything random in a step comes from one explicit `torch.Generator` per rank (t, eps, condition dropout) plus
torch's global generator (dropout layers); the data order is a pure function of (seed, rank, step), and the
learning rate and EMA decay are pure functions of the step, so a resumed run on CPU continues bit for bit.
"""

import contextlib
import copy
import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from diffspec.trainer import checkpoint as ckpt
from diffspec.trainer.data import load_dataset
from diffspec.trainer.models import build_model

VERSION = "0.1.0"


@dataclass
class TrainConfig:
    data: str = "moons"
    output_dir: str = "runs/out"
    max_train_steps: int | None = None
    train_batch_size: int | None = None
    learning_rate: float | None = None
    lr_scheduler: str = "cosine"  # constant | cosine
    lr_warmup_steps: int | None = None
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_weight_decay: float = 0.0
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    gradient_accumulation_steps: int = 1
    mixed_precision: str = "auto"  # auto (bf16 on CUDA, no on CPU) | no | bf16
    use_ema: bool = True
    ema_max_decay: float | None = None
    arch: str | None = None  # mlp | unet | dit (default per data set)
    model_kwargs: dict = field(default_factory=dict)  # overrides of the per-data-set defaults
    precond: str = "none"  # none | edm (EDM preconditioning; the parameterization is then x0)
    schedule: str | None = None
    schedule_kwargs: dict = field(default_factory=dict)
    prediction_type: str | None = None  # default v: well conditioned at both ends (see README "## Training")
    weighting: str | None = None
    snr_gamma: float | None = None
    timestep_sampling: str | None = None  # default: uniform_discrete (discrete), edm_lognormal (edm), uniform
    noise_offset: float = 0.0
    learned_variance: bool = False  # iDDPM: 2C outputs, hybrid loss; discrete VP schedules only
    lambda_vlb: float = 0.001  # weight of L_vlb in the hybrid loss (Nichol & Dhariwal 2021)
    class_conditional: bool | None = None  # default: when the data has labels
    cond_drop_prob: float = 0.1
    seed: int = 0
    checkpointing_steps: int | None = None
    checkpoints_total_limit: int | None = None
    resume_from_checkpoint: str | None = None  # "latest" or a folder
    validation_steps: int | None = None
    validation_sampler: str | None = None  # default dpmpp_2m; ddpm with variance="learned_range" with learned_variance
    num_inference_steps: int = 20
    num_validation_samples: int | None = None
    validation_guidance_scale: float = 1.0  # diffusers convention: 1 = off
    logging_steps: int = 50
    torch_compile: bool = False
    device: str | None = None  # default: cuda when available
    progress: bool = True
    n_points: int = 20000


# Per-data-set defaults, measured on 2 CPU cores (README "## Training").
POINT_DEFAULTS = dict(arch="mlp", model_kwargs=dict(hidden=128, depth=3, freq_dim=32), train_batch_size=256,
                      learning_rate=2e-3, max_train_steps=4000, lr_warmup_steps=100, ema_max_decay=0.995,
                      schedule="linear", validation_steps=1000, num_validation_samples=2000)
IMAGE_DEFAULTS = {
    8: dict(arch="unet", model_kwargs=dict(model_channels=32, channel_mult=(1, 2), num_res_blocks=1,
                                           attention_resolutions=(4,), num_heads=4, groups=8),
            train_batch_size=128, learning_rate=2e-3, max_train_steps=1500, lr_warmup_steps=100,
            ema_max_decay=0.999, schedule="linear", validation_steps=500, num_validation_samples=100),
    "default": dict(arch="unet", model_kwargs=dict(model_channels=32, channel_mult=(1, 2, 2), num_res_blocks=1,
                                                   attention_resolutions=(7,), num_heads=4, groups=8),
                    train_batch_size=64, learning_rate=1e-3, max_train_steps=5000, lr_warmup_steps=200,
                    ema_max_decay=0.999, schedule="linear", validation_steps=1000, num_validation_samples=64),
}


def _defaults_for(ds):
    if ds.kind == "points":
        return POINT_DEFAULTS
    size = ds.shape[-1]
    d = copy.deepcopy(IMAGE_DEFAULTS.get(size, IMAGE_DEFAULTS["default"]))
    if size not in IMAGE_DEFAULTS:
        levels = 3 if size % 4 == 0 else (2 if size % 2 == 0 else 1)
        d["model_kwargs"]["channel_mult"] = (1, 2, 2)[:levels]
        d["model_kwargs"]["attention_resolutions"] = (size // 2 ** (levels - 1),)
    return d


def lr_at(step, cfg):
    """Learning rate at optimizer step `step` (0-based): linear warm-up, then constant or cosine to 0."""
    base, warm, total = cfg.learning_rate, cfg.lr_warmup_steps, cfg.max_train_steps
    if warm and step < warm:
        return base * (step + 1) / warm
    if cfg.lr_scheduler == "constant":
        return base
    progress = (step - warm) / max(1, total - warm)
    return base * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def ema_decay_at(num_updates, max_decay):
    """EMA warm-up (the diffusers EMAModel form): min(max_decay, (1 + n) / (10 + n))."""
    return min(max_decay, (1.0 + num_updates) / (10.0 + num_updates))


@torch.no_grad()
def ema_update(ema, model, decay):
    ema_p = [p for p in ema.parameters()]
    src = [p.detach().to(q.dtype) for p, q in zip(model.parameters(), ema_p)]
    torch._foreach_lerp_(ema_p, src, 1.0 - decay)
    for b, s in zip(ema.buffers(), model.buffers()):
        b.copy_(s)


# ----------------------------------------------------------------------------------------------------------
# Set-up
# ----------------------------------------------------------------------------------------------------------


def _check_config(cfg):
    def positive_int(name, allow_none=False):
        v = getattr(cfg, name)
        if v is None and allow_none:
            return
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            flag = "--" + name.replace("_", "-")
            raise ValueError(f"{flag}={v!r}: expected an integer >= 1")

    for name in ("max_train_steps", "train_batch_size", "gradient_accumulation_steps", "num_inference_steps",
                 "logging_steps"):
        positive_int(name)
    for name in ("checkpointing_steps", "checkpoints_total_limit", "validation_steps"):
        positive_int(name, allow_none=True)
    if not (cfg.learning_rate > 0 and math.isfinite(cfg.learning_rate)):
        raise ValueError(f"--learning-rate={cfg.learning_rate!r}: expected a finite number > 0")
    if cfg.lr_scheduler not in ("constant", "cosine"):
        raise ValueError(f"--lr-scheduler={cfg.lr_scheduler!r}: expected one of ['constant', 'cosine']")
    if cfg.mixed_precision not in ("auto", "no", "bf16"):
        hint = " (fp16 needs loss scaling; use bf16)" if cfg.mixed_precision == "fp16" else ""
        raise ValueError(f"--mixed-precision={cfg.mixed_precision!r}: expected one of ['auto', 'no', 'bf16']{hint}")
    if not 0.0 <= cfg.cond_drop_prob < 1.0:
        raise ValueError(f"--cond-drop-prob={cfg.cond_drop_prob!r}: expected a number in [0, 1)")
    if cfg.precond not in ("none", "edm"):
        raise ValueError(f"--precond={cfg.precond!r}: expected one of ['none', 'edm']")
    if cfg.noise_offset < 0:
        raise ValueError(f"--noise-offset={cfg.noise_offset!r}: expected a number >= 0")
    if not (isinstance(cfg.lambda_vlb, (int, float)) and math.isfinite(cfg.lambda_vlb) and cfg.lambda_vlb >= 0):
        raise ValueError(f"--lambda-vlb={cfg.lambda_vlb!r}: expected a finite number >= 0")
    if cfg.learned_variance:
        if cfg.precond != "none":
            raise ValueError(f"--learned-variance does not combine with --precond {cfg.precond!r}")
        if cfg.weighting is not None or cfg.snr_gamma is not None:
            raise ValueError("--learned-variance trains with iDDPM's hybrid loss (unweighted eps-MSE + lambda_vlb L_vlb); "
                             "drop --weighting / --snr-gamma")


def resolve_config(cfg, ds):
    """Fill the per-data-set defaults into a copy of cfg."""
    cfg = copy.deepcopy(cfg)
    d = _defaults_for(ds)
    for key in ("arch", "train_batch_size", "learning_rate", "max_train_steps", "lr_warmup_steps", "ema_max_decay",
                "schedule", "validation_steps", "num_validation_samples"):
        if getattr(cfg, key) is None:
            setattr(cfg, key, d[key])
    if cfg.arch == d["arch"]:
        cfg.model_kwargs = {**d["model_kwargs"], **cfg.model_kwargs}
    if cfg.class_conditional is None:
        cfg.class_conditional = ds.y is not None
    if cfg.validation_sampler is None:
        cfg.validation_sampler = "ddpm" if cfg.learned_variance else "dpmpp_2m"
    if cfg.class_conditional and ds.y is None:
        raise ValueError(f"--class-conditional: data {ds.name!r} has no labels")
    if cfg.lr_warmup_steps < 0:
        raise ValueError(f"--lr-warmup-steps={cfg.lr_warmup_steps!r}: expected an integer >= 0")
    _check_config(cfg)
    return cfg


def make_schedule(cfg):
    from diffspec.trainer import schedules

    if cfg.schedule not in schedules.SCHEDULES:
        raise ValueError(f"unknown --schedule {cfg.schedule!r}: expected one of {sorted(schedules.SCHEDULES)}")
    schedule = schedules.make_schedule(cfg.schedule, **cfg.schedule_kwargs)
    if cfg.learned_variance and not (schedule.is_discrete and schedule.variance_preserving):
        raise ValueError(f"--learned-variance needs a discrete VP schedule (iDDPM's L_vlb is over integer steps); "
                         f"--schedule {cfg.schedule!r} is continuous")
    return schedule


def model_spec(cfg, ds, schedule):
    """(arch, kwargs) as stored in config.json: JSON-able, enough for build_model."""
    kwargs = dict(cfg.model_kwargs)
    for k in ("channel_mult", "attention_resolutions"):
        if k in kwargs:
            kwargs[k] = list(kwargs[k])
    if cfg.arch == "mlp":
        kwargs.setdefault("dim", int(np.prod(ds.shape)))
    else:
        kwargs.setdefault("in_channels", ds.shape[0])
        kwargs.setdefault("image_size", ds.shape[-1])
    if cfg.class_conditional:
        kwargs["num_classes"] = int(ds.num_classes)
    if cfg.learned_variance:
        kwargs["learned_variance"] = True
    if cfg.precond == "edm":
        kwargs.setdefault("time_scale", 250.0)
        return "precond", {"inner": {"arch": cfg.arch, "kwargs": kwargs}, "schedule": schedule.to_dict(),
                           "sigma_data": 0.5}
    kwargs.setdefault("time_scale", 1000.0 / float(schedule.t_max))
    return cfg.arch, kwargs


def parameterization_of(cfg):
    from diffspec.trainer.parameterizations import parse

    if cfg.precond == "edm":
        if cfg.prediction_type is not None and parse(cfg.prediction_type).value != "x0":
            raise ValueError(f"--precond edm predicts x0; drop --prediction-type {cfg.prediction_type!r}")
        return "x0"
    return parse(cfg.prediction_type or "v").value


def timestep_sampler(cfg, schedule):
    from diffspec.trainer import timesteps

    name = cfg.timestep_sampling
    if name is None:
        name = "uniform_discrete" if schedule.is_discrete else ("edm_lognormal" if cfg.schedule == "edm" else "uniform")
    if name not in timesteps.TIMESTEPS:
        raise ValueError(f"unknown --timestep-sampling {name!r}: expected one of {sorted(timesteps.TIMESTEPS)}")
    if cfg.learned_variance and name not in ("uniform_discrete", "importance"):
        raise ValueError(f"--learned-variance needs integer timesteps: --timestep-sampling {name!r} draws continuous "
                         f"ones; use uniform_discrete or importance")
    if name == "importance":
        bins = schedule.num_steps if schedule.is_discrete else 100
        history = timesteps.LossHistory(bins)
        fn = timesteps.TIMESTEPS[name]
        return name, (lambda n, gen: fn(schedule, n, gen, history=history)), history
    fn = timesteps.TIMESTEPS[name]
    return name, (lambda n, gen: fn(schedule, n, gen)), None


def weighting_of(cfg):
    from diffspec.trainer.weightings import WEIGHTINGS

    if cfg.snr_gamma is not None:
        if cfg.weighting not in (None, "min_snr"):
            raise ValueError(f"--snr-gamma sets the min_snr weighting; it conflicts with --weighting {cfg.weighting!r}")
        if not cfg.snr_gamma > 0:
            raise ValueError(f"--snr-gamma={cfg.snr_gamma!r}: expected a number > 0")
        return "min_snr", {"gamma": float(cfg.snr_gamma)}
    if cfg.weighting is None:
        return None, None
    if cfg.weighting not in WEIGHTINGS:
        raise ValueError(f"unknown --weighting {cfg.weighting!r}: expected one of {sorted(WEIGHTINGS)}")
    return cfg.weighting, None


class BatchStream:
    """Batches as a pure function of the position in a stream of per-epoch permutations of this rank's shard."""

    def __init__(self, ds, device, *, seed, rank, world):
        idx = np.arange(len(ds.x))[rank::world]
        if len(idx) == 0:
            raise ValueError(f"data {ds.name!r} has {len(ds.x)} samples: fewer than the {world} ranks")
        self.idx, self.seed, self.rank = idx, seed, rank
        self.x = torch.as_tensor(ds.x, device=device)
        self.y = torch.as_tensor(ds.y, device=device) if ds.y is not None else None
        self._perms = {}

    def _perm(self, epoch):
        if epoch not in self._perms:
            if len(self._perms) > 4:
                self._perms.clear()
            self._perms[epoch] = self.idx[np.random.default_rng([self.seed, self.rank, epoch]).permutation(len(self.idx))]
        return self._perms[epoch]

    def batch(self, start, size):
        n = len(self.idx)
        pos = np.arange(start, start + size)
        epochs = pos // n
        sel = np.empty(size, dtype=np.int64)
        for e in np.unique(epochs):
            m = epochs == e
            sel[m] = self._perm(int(e))[pos[m] % n]
        sel_t = torch.as_tensor(sel, device=self.x.device)
        return self.x[sel_t], (self.y[sel_t] if self.y is not None else None)


# ----------------------------------------------------------------------------------------------------------
# Validation images (Pillow / numpy only)
# ----------------------------------------------------------------------------------------------------------


def scatter_png(points, path, *, reference=None, size=384):
    """2-D points as a PNG: reference data light grey, samples dark blue; axes fixed to [-1.5, 1.5]^2."""
    from PIL import Image

    img = np.full((size, size, 3), 255, dtype=np.uint8)

    def draw(p, color):
        p = np.asarray(p, dtype=np.float64)[:, :2]
        ij = np.round((p + 1.5) / 3.0 * (size - 1)).astype(np.int64)
        ok = (ij >= 0).all(1) & (ij < size).all(1)
        col, row = ij[ok, 0], size - 1 - ij[ok, 1]
        for dr in (0, 1):
            for dc in (0, 1):
                img[np.clip(row + dr, 0, size - 1), np.clip(col + dc, 0, size - 1)] = color

    if reference is not None:
        draw(reference, (200, 200, 200))
    draw(points, (20, 40, 160))
    Image.fromarray(img).save(path)


def image_grid_png(images, path, *, data_range=(-1.0, 1.0), scale_up=None):
    """(N, C, H, W) model-space images in [-1, 1] as one PNG grid (ceil(sqrt N) columns)."""
    from PIL import Image

    x = np.asarray(images, dtype=np.float64)
    n, c, h, w = x.shape
    cols = int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / cols))
    lo, hi = data_range
    x = np.clip((x - lo) / (hi - lo), 0, 1)
    canvas = np.ones((c, rows * (h + 1) + 1, cols * (w + 1) + 1))
    for i in range(n):
        r, q = divmod(i, cols)
        canvas[:, 1 + r * (h + 1): 1 + r * (h + 1) + h, 1 + q * (w + 1): 1 + q * (w + 1) + w] = x[i]
    arr = (canvas * 255).round().astype(np.uint8)
    arr = arr[0] if c == 1 else arr[:3].transpose(1, 2, 0)
    im = Image.fromarray(arr)
    scale_up = scale_up or max(1, 256 // max(im.size))
    if scale_up > 1:
        im = im.resize((im.size[0] * scale_up, im.size[1] * scale_up), Image.NEAREST)
    im.save(path)


def _sampler_and_grid(name, schedule, steps):
    from diffspec.trainer import samplers as S

    registry = getattr(S, "SAMPLERS", None)
    if registry is None:
        from diffspec.trainer.samplers.dpm_solver_pp import sample_dpmpp_2m
        registry = {"dpmpp_2m": sample_dpmpp_2m}
    if name not in registry:
        raise ValueError(f"unknown --validation-sampler {name!r}: expected one of {sorted(registry)}")
    try:
        from diffspec.trainer.grids import GRIDS
        grid_name = "uniform" if "uniform" in GRIDS else sorted(GRIDS)[0]
        grid = GRIDS[grid_name](schedule, steps)
    except ImportError:  # the grids module is optional here: a plain uniform grid in t, ending at t_min
        grid = torch.linspace(float(schedule.t_max), float(schedule.t_min), steps + 1, dtype=torch.float64)
    return registry[name], grid


@torch.no_grad()
def sample(model, schedule, parameterization, shape, *, n, sampler="dpmpp_2m", steps=20, seed=0, y=None,
           guidance_scale=1.0, null_class=None, device="cpu", variance=None):
    """n samples (model space) from `model` with one of the twin's samplers; CFG when guidance_scale != 1.

    A learned-variance model (2C outputs): every sampler uses the mean half; `variance` (ddpm only) is passed on,
    and variance="learned_range" feeds the variance half (the conditional one under CFG) to ddpm as `variance_v`,
    taken from the same model call as the mean when possible (no second call per step)."""
    from diffspec.trainer.parameterizations import x0_from_output

    fn, grid = _sampler_and_grid(sampler, schedule, steps)
    gen = torch.Generator(device=device).manual_seed(seed)
    t0 = torch.as_tensor(grid[0], dtype=torch.float64)
    x_T = torch.randn((n, *shape), generator=gen, device=device) * float(schedule.sigma(t0))

    if variance is not None and sampler != "ddpm":
        raise ValueError(f"variance={variance!r} is a ddpm option; the sampler is {sampler!r}")
    last = {}  # the variance half of the latest model call, keyed by the input tensor

    def model_out(x, t):
        t = t.to(torch.float32)
        if y is not None and guidance_scale != 1.0:
            out = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, torch.full_like(y, null_class)]))
            oc, ou = out.float().chunk(2)
            var = oc[:, x.shape[1]:] if oc.shape[1] == 2 * x.shape[1] else None
            out = ou + guidance_scale * (oc - ou)
        else:
            out = model(x, t, y).float()
            var = out[:, x.shape[1]:] if out.shape[1] == 2 * x.shape[1] else None
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

    options = {}
    if variance is not None:
        options["variance"] = variance
        if variance == "learned_range":
            options["variance_v"] = variance_v
    try:
        return fn(denoise, x_T, grid, schedule, noise=gen, **options)
    except TypeError:
        if options:
            raise
        return fn(denoise, x_T, grid, schedule)


# ----------------------------------------------------------------------------------------------------------
# Distributed
# ----------------------------------------------------------------------------------------------------------


def _dist_setup(device_type):
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, None
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), dist


# ----------------------------------------------------------------------------------------------------------
# Train
# ----------------------------------------------------------------------------------------------------------


def train(cfg):
    """Run training; returns {"checkpoint": path, "step": n, "seconds": s, "final_loss": l} (on every rank)."""
    if cfg.device is None:
        cfg = dataclasses.replace(cfg, device="cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(cfg.device)
    rank, world, dist = _dist_setup(device.type)
    if device.type == "cuda" and world > 1:
        local = int(os.environ.get("LOCAL_RANK", rank))
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    try:
        return _train(cfg, device, rank, world, dist)
    finally:
        if dist is not None and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def _train(cfg, device, rank, world, dist):
    ds = load_dataset(cfg.data, n_points=cfg.n_points, seed=cfg.seed)
    cfg = resolve_config(cfg, ds)
    schedule = make_schedule(cfg)
    parameterization = parameterization_of(cfg)
    weighting, weighting_options = weighting_of(cfg)
    ts_name, draw_t, history = timestep_sampler(cfg, schedule)
    from diffspec.trainer.losses import diffusion_loss, hybrid_loss

    arch, kwargs = model_spec(cfg, ds, schedule)
    config = {
        "diffspec_version": VERSION, "model": {"arch": arch, "kwargs": kwargs}, "schedule": schedule.to_dict(),
        "parameterization": parameterization, "time_input": "t", "data": ds.info(),
        "num_classes": int(ds.num_classes) if cfg.class_conditional else None,
        "null_class": int(ds.num_classes) if cfg.class_conditional else None, "learned_variance": bool(cfg.learned_variance),
        "train": {**dataclasses.asdict(cfg), "timestep_sampling": ts_name, "world_size": world,
                  "weighting": weighting, "weighting_options": weighting_options},
    }
    json.loads(json.dumps(config))  # JSON-able or fail here, not mid-save

    torch.manual_seed(cfg.seed)  # identical initial weights on every rank (DDP also broadcasts rank 0's)
    model = build_model(arch, **kwargs).to(device)
    if cfg.learned_variance and not getattr(model, "learned_variance", False):
        raise ValueError(f"--learned-variance: the {arch!r} network does not support a learned variance")
    image = ds.kind == "image"
    if device.type == "cuda" and image:
        model = model.to(memory_format=torch.channels_last)
    ema = copy.deepcopy(model).requires_grad_(False).eval() if cfg.use_ema else None
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, betas=(cfg.adam_beta1, cfg.adam_beta2),
                                  weight_decay=cfg.adam_weight_decay, eps=cfg.adam_epsilon)
    gen = torch.Generator(device=device).manual_seed(cfg.seed * 1000 + rank)
    torch.manual_seed(cfg.seed * 1000 + rank + 1)  # dropout layers: per-rank streams
    output_dir = Path(cfg.output_dir)

    start_step, ema_updates = 0, 0
    if cfg.resume_from_checkpoint:
        if cfg.resume_from_checkpoint == "latest":
            path = ckpt.find_latest(output_dir)
            if path is None and any(output_dir.glob("checkpoint-*")):
                raise ValueError(f"--resume-from-checkpoint latest: no checkpoint in {str(output_dir)!r} verifies")
        else:
            path = Path(cfg.resume_from_checkpoint)
            if not path.is_dir():
                raise ValueError(f"--resume-from-checkpoint {str(path)!r}: no such checkpoint folder")
        if path is not None:
            state = ckpt.load_training_state(path, model=model, ema=ema, optimizer=optimizer,
                                             generators={"train": gen} if rank == 0 else {}, config=config)
            start_step, ema_updates = int(state["step"]), int(state.get("ema_updates", 0))
            if rank != 0:
                gen.manual_seed(cfg.seed * 1000 + rank + 7919 * start_step)
            if rank == 0:
                print(f"resumed from {path} at step {start_step}", flush=True)

    train_model = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        train_model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.torch_compile:
        train_model = torch.compile(train_model)

    use_bf16 = device.type == "cuda" and cfg.mixed_precision in ("auto", "bf16")
    if cfg.mixed_precision == "bf16" and device.type != "cuda":
        use_bf16 = True  # honour an explicit request on CPU (slow on most CPUs, but correct)
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if use_bf16 else contextlib.nullcontext

    stream = BatchStream(ds, device, seed=cfg.seed, rank=rank, world=world)
    B, accum = cfg.train_batch_size, cfg.gradient_accumulation_steps
    null = ds.num_classes if cfg.class_conditional else None
    is_main = rank == 0
    log_path = output_dir / "log.jsonl"
    if is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    bar = None
    if is_main and cfg.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.max_train_steps, initial=start_step, desc="train", dynamic_ncols=True)

    def micro_step(step, micro):
        x0, y = stream.batch((step * accum + micro) * B, B)
        t = draw_t(B, gen).to(device=device, dtype=torch.float32)
        eps = torch.randn(x0.shape, generator=gen, device=device)
        if cfg.noise_offset > 0:
            off_shape = (B, x0.shape[1]) + (1,) * (x0.ndim - 2) if image else (B, 1)
            eps = eps + cfg.noise_offset * torch.randn(off_shape, generator=gen, device=device)
        if y is not None:
            if cfg.class_conditional:
                drop = torch.rand((B,), generator=gen, device=device) < cfg.cond_drop_prob
                y = torch.where(drop, torch.full_like(y, null), y)
            else:
                y = None
        a = schedule.alpha(t).reshape((-1,) + (1,) * (x0.ndim - 1))
        s = schedule.sigma(t).reshape((-1,) + (1,) * (x0.ndim - 1))
        x_t = a * x0 + s * eps
        if device.type == "cuda" and image:
            x_t = x_t.contiguous(memory_format=torch.channels_last)
        with autocast():
            out = train_model(x_t, t, y)
        if cfg.learned_variance:  # iDDPM: the first C channels are the parameterization's output, the rest v
            mean_out, var_out = out.float().chunk(2, dim=1)
            loss = hybrid_loss(mean_out, var_out, x0, eps, t.round().long(), schedule,
                               parameterization=parameterization, lambda_vlb=cfg.lambda_vlb)
        else:
            loss = diffusion_loss(out.float(), x0, eps, t, schedule, parameterization=parameterization,
                                  weighting=weighting, weighting_options=weighting_options)
        if history is not None:
            from diffspec.trainer.timesteps import bin_of

            bins = bin_of(schedule, t, history.num_bins)
            history.update(bins, loss.detach())
            loss = loss * history.weights(bins).to(loss)
        return loss.mean()

    loss_sum = torch.zeros((), device=device)
    loss_count, t_last, step_last = 0, time.perf_counter(), start_step
    t_start = time.perf_counter()
    final_loss = float("nan")
    step = start_step
    for step in range(start_step, cfg.max_train_steps):
        lr = lr_at(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        for micro in range(accum):
            sync = contextlib.nullcontext() if (world == 1 or micro == accum - 1) else model_no_sync(train_model)
            with sync:
                loss = micro_step(step, micro)
                (loss / accum).backward()
            loss_sum += loss.detach()
            loss_count += 1
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm) if cfg.max_grad_norm > 0 else None
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema_update(ema, model, ema_decay_at(ema_updates, cfg.ema_max_decay))
            ema_updates += 1
        done = step + 1
        if done % cfg.logging_steps == 0 or done == cfg.max_train_steps:
            final_loss = float(loss_sum) / max(loss_count, 1)
            now = time.perf_counter()
            rate = (done - step_last) / max(now - t_last, 1e-9)
            if is_main:
                rec = {"step": done, "loss": final_loss, "lr": lr, "steps_per_s": rate,
                       "grad_norm": float(grad_norm) if grad_norm is not None else None,
                       "ema_decay": ema_decay_at(ema_updates - 1, cfg.ema_max_decay) if ema is not None else None,
                       "time": now - t_start}
                with open(log_path, "a") as f:
                    f.write(json.dumps(rec) + "\n")
                if bar is not None:
                    bar.set_postfix(loss=f"{final_loss:.4f}", lr=f"{lr:.2e}", steps_s=f"{rate:.1f}")
            loss_sum.zero_()
            loss_count, t_last, step_last = 0, now, done
        if bar is not None:
            bar.update(1)
        is_last = done == cfg.max_train_steps
        if is_main and (is_last or (cfg.checkpointing_steps and done % cfg.checkpointing_steps == 0)):
            ckpt.save_checkpoint(output_dir, done, model=model, ema=ema, optimizer=optimizer, config=config,
                                 state={"ema_updates": ema_updates, "epoch_samples": done * accum * B},
                                 generators={"train": gen}, total_limit=cfg.checkpoints_total_limit)
        if is_main and (is_last or (cfg.validation_steps and done % cfg.validation_steps == 0)):
            validate(ema if ema is not None else model, schedule, parameterization, ds, cfg, output_dir, done, device)
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - t_start
    final = output_dir / f"checkpoint-{cfg.max_train_steps}"
    return {"checkpoint": str(final), "step": cfg.max_train_steps, "seconds": seconds, "final_loss": final_loss,
            "start_step": start_step, "config": config}


def model_no_sync(train_model):
    m = getattr(train_model, "_orig_mod", train_model)
    return m.no_sync() if hasattr(m, "no_sync") else contextlib.nullcontext()


def validate(model, schedule, parameterization, ds, cfg, output_dir, step, device):
    """Write OUTPUT_DIR/samples/step-STEP.png from the EMA model (fixed seed: comparable across steps)."""
    was_training = model.training
    model.eval()
    n = cfg.num_validation_samples
    y = None
    if cfg.class_conditional:
        y = torch.arange(n, device=device) % ds.num_classes
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        x = sample(model, schedule, parameterization, ds.shape, n=n, sampler=cfg.validation_sampler,
                   steps=cfg.num_inference_steps, seed=cfg.seed + 12345, y=y, guidance_scale=cfg.validation_guidance_scale,
                   null_class=ds.num_classes, device=device,
                   variance="learned_range" if cfg.learned_variance and cfg.validation_sampler == "ddpm" else None)
    model.train(was_training)
    out = Path(output_dir) / "samples"
    out.mkdir(parents=True, exist_ok=True)
    x = x.float().cpu().numpy()
    path = out / f"step-{step:07d}.png"
    if ds.kind == "points" and ds.shape == (2,):
        scatter_png(x, path, reference=ds.x[:n])
    elif ds.kind == "image":
        image_grid_png(x, path)
    np.save(out / f"step-{step:07d}.npy", x)
    return path

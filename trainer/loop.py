"""The training loop: AdamW with warm-up and a constant/cosine learning rate, EMA with warm-up, gradient
clipping and accumulation, bf16 autocast on CUDA, condition dropout for classifier-free guidance, any
parameterization / schedule / weighting / t-distribution of the torch twin's registries, atomic checkpoints with
exact resume, a tqdm bar, a JSONL log and PNG grids of EMA samples. Several GPUs or hosts via torchrun (DDP when
WORLD_SIZE > 1: each rank its own data shard and seed; checkpoints, logs and images from rank 0).

The pieces live in their own modules: `config` (TrainConfig, defaults, checks), `optim` (AdamW, learning rate,
EMA), `stream` (the data order), `objective` (the per-sample loss: pluggable), `validation` and `images`
(samples and their pictures). This module builds them from a config and runs the steps.

Everything random in a step comes from one explicit `torch.Generator` per rank (drawn by the objective) plus
torch's global generator (dropout layers); the data order is a pure function of (seed, rank, step), and the
learning rate and EMA decay are pure functions of the step, so a resumed run on CPU continues bit for bit.
"""

import contextlib
import copy
import dataclasses
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffspec.reference.modelcard import DIFFSPEC_VERSION
from diffspec.trainer import checkpoint as ckpt
from diffspec.trainer.config import (
    IMAGE_DEFAULTS,
    POINT_DEFAULTS,
    LRScheduler,
    MixedPrecision,
    Precond,
    TrainConfig,
    check_before_data,
    default_threads,
    flag,
    resolve_config,
)
from diffspec.trainer.data import ImageFolder, load_dataset
from diffspec.trainer.images import has_picture, pixels
from diffspec.trainer.models import build_model
from diffspec.trainer.objective import DiffusionObjective, Objective
from diffspec.trainer.optim import EMA, clip_grad_norm, ema_decay_at, ema_update, lr_at, make_optimizer, set_lr
from diffspec.trainer.stream import BatchStream, LoaderStream
from diffspec.trainer.trackers import Tracker, make_tracker
from diffspec.trainer.validation import check_validation_size, sample, sampler_and_grid, validate

VERSION = DIFFSPEC_VERSION
STARTUP_THREADS = torch.get_num_threads()  # torch's default (physical cores or OMP_NUM_THREADS), before any change

__all__ = [
    "IMAGE_DEFAULTS",
    "POINT_DEFAULTS",
    "LRScheduler",
    "MixedPrecision",
    "Precond",
    "Setup",
    "TrainConfig",
    "ema_decay_at",
    "ema_update",
    "lr_at",
    "sample",
    "train",
    "validate",
]


# ----------------------------------------------------------------------------------------------------------
# Set-up: config -> schedule, parameterization, weighting, t-distribution, network spec
# ----------------------------------------------------------------------------------------------------------


def make_schedule(cfg: TrainConfig):
    from diffspec.trainer import schedules

    if cfg.schedule not in schedules.SCHEDULES:
        raise ValueError(f"unknown --schedule {cfg.schedule!r}: expected one of {sorted(schedules.SCHEDULES)}")
    try:
        schedule = schedules.make_schedule(cfg.schedule, **cfg.schedule_kwargs)
    except TypeError as err:
        raise ValueError(f"--schedule-kwargs {json.dumps(cfg.schedule_kwargs)}: {err}") from None
    if cfg.learned_variance and not (schedule.is_discrete and schedule.variance_preserving):
        raise ValueError(
            f"--learned-variance needs a discrete VP schedule (iDDPM's L_vlb is over integer steps); "
            f"--schedule {cfg.schedule!r} is continuous"
        )
    return schedule


def model_spec(cfg: TrainConfig, ds, schedule) -> tuple[str, dict]:
    """(arch, kwargs) as stored in config.json: JSON-able, enough for build_model."""
    kwargs = dict(cfg.model_kwargs)
    for k in ("channel_mult", "attention_resolutions"):
        if k in kwargs and isinstance(kwargs[k], (list, tuple)):
            kwargs[k] = list(kwargs[k])
    if str(cfg.arch).startswith("diffusers-") and ds.kind != "image":
        raise ValueError(
            f"--arch {cfg.arch}: diffusers' networks are 2-D image models, got {ds.kind} data "
            f"{ds.name!r}: use --arch mlp"
        )
    if cfg.arch == "mlp":
        kwargs.setdefault("dim", int(np.prod(ds.shape)))
    else:
        kwargs.setdefault("in_channels", ds.shape[0])
        kwargs.setdefault("image_size", ds.shape[-1])
    if cfg.class_conditional:
        kwargs["num_classes"] = int(ds.num_classes)
    if cfg.learned_variance:
        kwargs["learned_variance"] = True
    if cfg.precond == Precond.EDM:
        kwargs.setdefault("time_scale", 250.0)
        return "precond", {
            "inner": {"arch": cfg.arch, "kwargs": kwargs},
            "schedule": schedule.to_dict(),
            "sigma_data": 0.5,
        }
    if str(cfg.arch).startswith("diffusers-") and schedule.is_discrete:
        kwargs.setdefault("time_scale", 1.0)  # diffusers' pipelines feed the integer timestep itself
    kwargs.setdefault("time_scale", 1000.0 / float(schedule.t_max))
    if cfg.arch is None:
        raise ValueError("model_spec: cfg.arch is unset (resolve the config first)")
    return cfg.arch, kwargs


def build_network(arch: str, kwargs: dict) -> torch.nn.Module:
    """build_model, with any error from bad network options reported as one ValueError naming --model-kwargs."""
    try:
        return build_model(arch, **kwargs)
    except (TypeError, ValueError, RuntimeError, ZeroDivisionError) as err:
        inner = kwargs.get("inner", {}).get("kwargs", kwargs) if arch == "precond" else kwargs
        raise ValueError(
            f"--model-kwargs: the {arch!r} network cannot be built with {json.dumps(inner)}: "
            f"{str(err).splitlines()[0] if str(err) else type(err).__name__}"
        ) from None


def parameterization_of(cfg: TrainConfig) -> str:
    from diffspec.trainer.parameterizations import parse

    if cfg.precond == Precond.EDM:
        if cfg.prediction_type is not None and parse(cfg.prediction_type).value != "x0":
            raise ValueError(f"--precond edm predicts x0; drop --prediction-type {cfg.prediction_type!r}")
        return "x0"
    return parse(cfg.prediction_type or "v").value


def timestep_sampler(cfg: TrainConfig, schedule):
    """(name, draw(n, gen) -> t, LossHistory or None) for --timestep-sampling."""
    from diffspec.trainer import timesteps

    name = cfg.timestep_sampling
    if name is None:
        name = "uniform_discrete" if schedule.is_discrete else ("edm_lognormal" if cfg.schedule == "edm" else "uniform")
    if name not in timesteps.TIMESTEPS:
        raise ValueError(f"unknown --timestep-sampling {name!r}: expected one of {sorted(timesteps.TIMESTEPS)}")
    if cfg.learned_variance and name not in ("uniform_discrete", "importance"):
        raise ValueError(
            f"--learned-variance needs integer timesteps: --timestep-sampling {name!r} draws continuous "
            f"ones; use uniform_discrete or importance"
        )
    fn = timesteps.TIMESTEPS[name]
    # integer steps stay integers: the objective then reads alpha, sigma and lam from the schedule's table
    dtype = torch.int64 if schedule.is_discrete and name in ("uniform_discrete", "importance") else torch.float32
    if name == "importance":
        bins = schedule.num_steps if schedule.is_discrete else 100
        history = timesteps.LossHistory(bins)
        return name, (lambda n, gen: fn(schedule, n, gen, history=history, dtype=dtype)), history
    if name == "uniform_discrete" and not schedule.is_discrete:
        raise ValueError(
            f"--timestep-sampling uniform_discrete needs a discrete schedule; --schedule {cfg.schedule!r} "
            "is continuous: use uniform"
        )
    return name, (lambda n, gen: fn(schedule, n, gen, dtype=dtype)), None


def weighting_of(cfg: TrainConfig):
    from diffspec.trainer.weightings import WEIGHTINGS

    if cfg.snr_gamma is not None:
        if cfg.weighting not in (None, "min_snr"):
            raise ValueError(f"--snr-gamma sets the min_snr weighting; it conflicts with --weighting {cfg.weighting!r}")
        return "min_snr", {"gamma": float(cfg.snr_gamma)}
    if cfg.weighting is None:
        return None, None
    if cfg.weighting not in WEIGHTINGS:
        raise ValueError(f"unknown --weighting {cfg.weighting!r}: expected one of {sorted(WEIGHTINGS)}")
    return cfg.weighting, None


def autocast_of(cfg: TrainConfig, device: torch.device) -> Callable:
    """A context-manager factory: bf16 autocast on CUDA by default (or where asked for), else nothing."""
    use_bf16 = (device.type == "cuda" and cfg.mixed_precision in (MixedPrecision.AUTO, MixedPrecision.BF16)) or (
        cfg.mixed_precision == MixedPrecision.BF16
    )  # honour an explicit request on CPU (slow, but correct)
    return (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if use_bf16 else contextlib.nullcontext


@dataclass
class Setup:
    """What an objective may need to know about the run (given to `train`'s `objective` factory)."""

    cfg: TrainConfig
    ds: Any  # the data set (points or an image folder)
    schedule: object
    parameterization: str
    device: torch.device
    autocast: Callable
    channels_last: bool


def diffusion_objective(setup: Setup, *, draw_t, history, weighting, weighting_options) -> Objective:
    cfg, ds = setup.cfg, setup.ds
    return DiffusionObjective(
        schedule=setup.schedule,
        parameterization=setup.parameterization,
        draw_t=draw_t,
        weighting=weighting,
        weighting_options=weighting_options,
        noise_offset=cfg.noise_offset,
        class_conditional=bool(cfg.class_conditional),
        cond_drop_prob=cfg.cond_drop_prob,
        null_class=ds.num_classes if cfg.class_conditional else None,
        learned_variance=cfg.learned_variance,
        lambda_vlb=cfg.lambda_vlb,
        history=history,
        autocast=setup.autocast,
        channels_last=setup.channels_last,
    )


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


def model_no_sync(train_model):
    m = getattr(train_model, "_orig_mod", train_model)
    return m.no_sync() if hasattr(m, "no_sync") else contextlib.nullcontext()


# ----------------------------------------------------------------------------------------------------------
# Train
# ----------------------------------------------------------------------------------------------------------


def resolve_device(name: str) -> torch.device:
    """torch.device(name), checked: a CUDA device must exist on this machine."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"--device={name!r}: expected cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"--device={name!r}: CUDA is not available here (no GPU, or a CPU-only torch); use --device cpu"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device={name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type != "cpu":
        raise ValueError(f"--device={name!r}: expected cpu, cuda or cuda:N")
    return device


def train(cfg: TrainConfig, *, objective: Callable[[Setup], Objective] | None = None) -> dict:
    """Run training; returns {"checkpoint": path, "step": n, "seconds": s, "final_loss": l, ...} (on every rank).

    `objective`, when given, is a factory Setup -> Objective that replaces the diffusion loss (see
    `diffspec.trainer.objective`); everything else (data order, optimizer, EMA, checkpoints) is the same loop.
    """
    device_name = cfg.device
    if device_name is None:
        device_name = "cuda" if torch.cuda.is_available() else "cpu"
        cfg = dataclasses.replace(cfg, device=device_name)
    device = resolve_device(device_name)
    rank, world, dist = _dist_setup(device.type)
    if device.type == "cuda" and world > 1:
        local = int(os.environ.get("LOCAL_RANK", rank))
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    try:
        return _train(cfg, device, rank, world, dist, objective)
    finally:
        if dist is not None and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def forward_flops(model: torch.nn.Module, shape: tuple, num_classes: int | None, device: torch.device) -> float:
    """Floating-point operations of one forward pass on one sample (torch's FlopCounterMode; eval mode, so no
    dropout draw touches the random streams). Networks it cannot count give the parameter count x 2."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    try:
        x, t = torch.zeros((1, *shape), device=device), torch.zeros(1, device=device)
        y = torch.zeros(1, dtype=torch.int64, device=device) if num_classes else None
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x, t, y)
        flops = counter.get_total_flops()
    except (RuntimeError, TypeError, ValueError):
        flops = 0
    finally:
        model.train(was_training)
    return float(flops) or 2.0 * sum(p.numel() for p in model.parameters())


LR_KEYS = ("learning_rate", "lr_scheduler", "lr_warmup_steps", "max_train_steps")


def lr_schedule_changes(saved_train: dict, cfg: TrainConfig) -> list[str]:
    """The learning-rate settings that differ between a checkpoint's run and this one ("name old -> new").

    The learning rate at a step depends on them all (a cosine decays over max_train_steps - lr_warmup_steps), so
    a resumed run whose list is not empty follows a different schedule than a run that never stopped."""
    changes = []
    for key in LR_KEYS:
        if key == "max_train_steps" and cfg.lr_scheduler == LRScheduler.CONSTANT:
            continue
        old, new = saved_train.get(key), getattr(cfg, key)
        if old is not None and old != new:
            changes.append(f"{flag(key)} {old} -> {new}")
    return changes


def clean_leftovers(output_dir: Path) -> list[str]:
    """Remove what interrupted saves left in OUTPUT_DIR: `.tmp-checkpoint-*` folders (a save killed before its
    rename) and `checkpoint-*.incomplete-*` folders (an unverified checkpoint moved aside by a later save). Neither
    can ever be resumed from. Returns the names removed."""
    removed: list[str] = []
    if not output_dir.is_dir():
        return removed
    for p in sorted(output_dir.iterdir()):
        name = p.name
        leftover = name.startswith(".tmp-checkpoint-") or (name.startswith("checkpoint-") and ".incomplete-" in name)
        if leftover and p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p.name)
    return removed


def _train(cfg, device, rank, world, dist, objective_factory):
    check_before_data(cfg)
    ds = load_dataset(
        cfg.data, n_points=cfg.n_points, seed=cfg.seed, resolution=cfg.resolution, center_crop=cfg.center_crop
    )
    cfg = resolve_config(cfg, kind=ds.kind, shape=ds.shape, has_labels=ds.y is not None, name=ds.name)
    schedule = make_schedule(cfg)
    parameterization = parameterization_of(cfg)
    weighting, weighting_options = weighting_of(cfg)
    ts_name, draw_t, history = timestep_sampler(cfg, schedule)
    check_validation_size(cfg.num_validation_samples, cfg.num_inference_steps, ds.shape)
    sampler_and_grid(cfg.validation_sampler, schedule, cfg.num_inference_steps)  # fail now, not after training

    arch, kwargs = model_spec(cfg, ds, schedule)
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank (DDP also broadcasts rank 0's)
    model = build_network(arch, kwargs).to(device)
    if cfg.learned_variance and not getattr(model, "learned_variance", False):
        raise ValueError(f"--learned-variance: the {arch!r} network does not support a learned variance")
    if cfg.threads is None:
        flops = forward_flops(model, ds.shape, ds.num_classes if cfg.class_conditional else None, device)
        cfg.threads = default_threads(flops * cfg.train_batch_size, device.type, STARTUP_THREADS)
    torch.set_num_threads(cfg.threads)
    is_main = rank == 0
    output_dir = Path(cfg.output_dir)
    resume = ckpt.resume_path(cfg.resume_from_checkpoint, output_dir)
    if is_main:
        for name in clean_leftovers(output_dir):
            print(f"removed {name} from {str(output_dir)!r} (left by an interrupted save)", file=sys.stderr)

    config = {
        "diffspec_version": VERSION,
        "model": {"arch": arch, "kwargs": kwargs},
        "schedule": schedule.to_dict(),
        "parameterization": parameterization,
        "time_input": "t",
        "data": ds.info(),
        "num_classes": int(ds.num_classes) if cfg.class_conditional else None,
        "null_class": int(ds.num_classes) if cfg.class_conditional else None,
        "learned_variance": bool(cfg.learned_variance),
        "train": {
            **dataclasses.asdict(cfg),
            "timestep_sampling": ts_name,
            "world_size": world,
            "weighting": weighting,
            "weighting_options": weighting_options,
        },
    }
    json.loads(json.dumps(config))  # JSON-able or fail here, not mid-save
    if cfg.save_diffusers:
        from diffspec.trainer.diffusers_io import check_save_diffusers

        check_save_diffusers(arch, kwargs, config["schedule"], parameterization)

    channels_last = device.type == "cuda" and ds.kind == "image"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    ema_model = copy.deepcopy(model).requires_grad_(False).eval() if cfg.use_ema else None
    ema = EMA(ema_model, model) if ema_model is not None else None
    optimizer = make_optimizer(cfg, model)
    gen = torch.Generator(device=device).manual_seed(cfg.seed * 1000 + rank)
    torch.manual_seed(cfg.seed * 1000 + rank + 1)  # dropout layers: per-rank streams

    start_step, ema_updates = 0, 0
    if resume is not None:
        saved = ckpt.read_config(resume)
        saved_step = _checkpoint_step(resume)
        if saved_step is not None and cfg.max_train_steps < saved_step:
            raise ValueError(
                f"--max-train-steps={cfg.max_train_steps} is below step {saved_step} of the checkpoint "
                f"{str(resume)!r}: ask for more steps than that, or use a new --output-dir"
            )
        state = ckpt.load_training_state(
            resume,
            model=model,
            ema=ema_model,
            optimizer=optimizer,
            generators={"train": gen} if rank == 0 else {},
            config=config,
        )
        start_step, ema_updates = int(state["step"]), int(state.get("ema_updates", 0))
        if cfg.max_train_steps < start_step:
            raise ValueError(
                f"--max-train-steps={cfg.max_train_steps} is below step {start_step} of the checkpoint "
                f"{str(resume)!r}: ask for more steps than that, or use a new --output-dir"
            )
        if rank != 0:
            gen.manual_seed(cfg.seed * 1000 + rank + 7919 * start_step)
        if is_main:
            print(f"resumed from {resume} at step {start_step}", flush=True)
            changes = lr_schedule_changes(saved.get("train") or {}, cfg)
            if changes:
                print(
                    f"note: the learning-rate schedule differs from the checkpoint's ({', '.join(changes)}): the "
                    "resumed run is not bit-exact with one that never stopped",
                    file=sys.stderr,
                    flush=True,
                )
            saved_threads = (saved.get("train") or {}).get("threads")
            if device.type == "cpu" and saved_threads is not None and saved_threads != cfg.threads:
                print(
                    f"note: --threads {cfg.threads} differs from the checkpoint's run ({saved_threads}): sums may "
                    "round differently, so the resumed run may not be bit-exact",
                    file=sys.stderr,
                    flush=True,
                )

    train_model = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        train_model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.torch_compile:
        train_model = torch.compile(train_model)

    setup = Setup(
        cfg=cfg,
        ds=ds,
        schedule=schedule,
        parameterization=parameterization,
        device=device,
        autocast=autocast_of(cfg, device),
        channels_last=channels_last,
    )
    if objective_factory is None:
        loss_fn = diffusion_objective(
            setup, draw_t=draw_t, history=history, weighting=weighting, weighting_options=weighting_options
        )
    else:
        loss_fn = objective_factory(setup)

    tracker = Tracker()
    if is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "config.json").write_text(json.dumps(ckpt.portable_config(config), indent=2) + "\n")
        tracker = make_tracker(cfg.report_to, output_dir, ckpt.portable_config(config))
    if isinstance(ds, ImageFolder):
        workers = cfg.dataloader_num_workers
        if workers is None:
            workers = min(4, max(1, (os.cpu_count() or 1) - 1))
        stream = LoaderStream(
            ds, device, seed=cfg.seed, rank=rank, world=world, workers=workers, random_flip=cfg.random_flip
        )
    else:
        stream = BatchStream(ds, device, seed=cfg.seed, rank=rank, world=world, random_flip=cfg.random_flip)
    run = Run(
        setup=setup,
        config=config,
        model=model,
        train_model=train_model,
        ema=ema,
        optimizer=optimizer,
        gen=gen,
        loss_fn=loss_fn,
        stream=stream,
        tracker=tracker,
        is_main=is_main,
        output_dir=output_dir,
    )
    try:
        return _steps(run, start_step, ema_updates)
    finally:
        stream.close()
        tracker.close()


def _checkpoint_step(path: Path) -> int | None:
    m = ckpt.CHECKPOINT_RE.match(Path(path).name)
    return int(m.group(1)) if m else None


@dataclass
class Run:
    """What the steps work with, built once by `_train`: the set-up, the networks and their optimizer, the random
    generator of the objective, the data stream and the outputs (rank 0 writes them)."""

    setup: Setup
    config: dict  # config.json's contents (also saved in every checkpoint)
    model: torch.nn.Module  # the network whose weights are saved
    train_model: torch.nn.Module  # what the step calls: the model, or its DDP / torch.compile wrapper
    ema: EMA | None
    optimizer: torch.optim.Optimizer
    gen: torch.Generator
    loss_fn: Objective
    stream: BatchStream | LoaderStream
    tracker: Tracker
    is_main: bool
    output_dir: Path


def _steps(run: Run, start_step: int, ema_updates: int) -> dict:
    """Steps start_step + 1 .. max_train_steps: the optimization, the log, checkpoints and validation samples."""
    cfg, ds, device = run.setup.cfg, run.setup.ds, run.setup.device
    schedule, parameterization = run.setup.schedule, run.setup.parameterization
    model, train_model, ema, optimizer, gen = run.model, run.train_model, run.ema, run.optimizer, run.gen
    loss_fn, stream, tracker, config = run.loss_fn, run.stream, run.tracker, run.config
    is_main, output_dir = run.is_main, run.output_dir
    ema_model = ema.module if ema is not None else None
    # resolve_config fills every size in from the presets before training starts
    assert cfg.max_train_steps is not None and cfg.train_batch_size is not None and cfg.ema_max_decay is not None
    B, accum = cfg.train_batch_size, cfg.gradient_accumulation_steps
    world = config["train"]["world_size"]
    log_path = output_dir / "log.jsonl"
    bar = None
    if is_main and cfg.progress:
        from tqdm.auto import tqdm

        # disable=None: no bar when stderr is not a terminal (a log file gets no carriage returns)
        bar = tqdm(total=cfg.max_train_steps, initial=start_step, desc="train", dynamic_ncols=True, disable=None)

    params: list[torch.Tensor] = list(
        model.parameters()
    )  # gathered once: walking the modules every step costs a small network ~2%
    loss_sum = torch.zeros((), device=device)
    loss_count, t_last, step_last = 0, time.perf_counter(), start_step
    t_start, cpu_start = time.perf_counter(), time.process_time()
    final_loss = float("nan")
    for step in range(start_step, cfg.max_train_steps):
        lr = lr_at(step, cfg)
        set_lr(optimizer, lr)
        for micro in range(accum):
            sync = contextlib.nullcontext() if (world == 1 or micro == accum - 1) else model_no_sync(train_model)
            with sync:
                x0, y = stream.batch((step * accum + micro) * B, B)
                loss = loss_fn(train_model, x0, y, gen).mean()
                (loss / accum if accum > 1 else loss).backward()
            loss_sum += loss.detach()
            loss_count += 1
        grad_norm = clip_grad_norm(params, cfg.max_grad_norm) if cfg.max_grad_norm > 0 else None
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.update(ema_decay_at(ema_updates, cfg.ema_max_decay))
            ema_updates += 1
        done = step + 1
        if done % cfg.logging_steps == 0 or done == cfg.max_train_steps:
            final_loss = float(loss_sum) / max(loss_count, 1)
            now = time.perf_counter()
            rate = (done - step_last) / max(now - t_last, 1e-9)
            if is_main:
                epoch = done * accum * B / stream.shard_size
                rec = {
                    "step": done,
                    "epoch": epoch,
                    "loss": final_loss,
                    "lr": lr,
                    "steps_per_s": rate,
                    "grad_norm": float(grad_norm) if grad_norm is not None else None,
                    "ema_decay": ema_decay_at(ema_updates - 1, cfg.ema_max_decay) if ema is not None else None,
                    "time": now - t_start,
                    "cpu_time": time.process_time() - cpu_start,
                }
                with open(log_path, "a") as f:
                    f.write(json.dumps(rec) + "\n")
                tracker.scalars(done, rec)
                if bar is not None:
                    bar.set_postfix(
                        epoch=f"{epoch:.2f}", loss=f"{final_loss:.4f}", lr=f"{lr:.2e}", steps_s=f"{rate:.1f}"
                    )
            loss_sum.zero_()
            loss_count, t_last, step_last = 0, now, done
        if bar is not None:
            bar.update(1)
        is_last = done == cfg.max_train_steps
        if is_main and (is_last or (cfg.checkpointing_steps and done % cfg.checkpointing_steps == 0)):
            ckpt.save_checkpoint(
                output_dir,
                done,
                model=model,
                ema=ema_model,
                optimizer=optimizer,
                config=config,
                state={"ema_updates": ema_updates, "epoch_samples": done * accum * B},
                generators={"train": gen},
                total_limit=cfg.checkpoints_total_limit,
            )
        if is_main and (is_last or (cfg.validation_steps and done % cfg.validation_steps == 0)):
            _, x = validate(
                ema_model if ema_model is not None else model,
                schedule,
                parameterization,
                ds,
                cfg,
                output_dir,
                done,
                device,
            )
            if has_picture(ds.kind, ds.shape):
                tracker.image(done, "samples", pixels(x, ds.kind))
    if bar is not None:
        bar.close()
    if is_main and cfg.save_diffusers:
        from diffspec.trainer.diffusers_io import save_diffusers

        save_diffusers(
            ema_model if ema_model is not None else model,
            output_dir / "diffusers",
            schedule=config["schedule"],
            parameterization=parameterization,
            data=config["data"],
        )
    seconds = time.perf_counter() - t_start
    final = output_dir / f"checkpoint-{cfg.max_train_steps}"
    return {
        "checkpoint": str(final),
        "step": cfg.max_train_steps,
        "seconds": seconds,
        "final_loss": final_loss,
        "start_step": start_step,
        "config": config,
    }

"""Few-step students as training procedures: consistency distillation and training, progressive distillation, reflow.

`distill(cfg)` runs one procedure and writes ordinary checkpoints (`checkpoint-STEP/` with config.json, weights and
manifest) that `diffspec-export` and `diffspec-sample` take like any other; config.json's "student" entry records
the procedure, its settings and the sampler a student is meant for. The math lives in `diffspec.trainer.distill`
(twin of `diffspec.reference.distillation`) and `diffspec.trainer.losses`; this module only wires it.

- consistency (CD): Song et al. (2023), Algorithm 2. The student is the teacher's network inside a consistency
  model (`models.consistency.ConsistencyModel`, boundary condition built in), initialised from the teacher; the
  target network is an EMA of the student (decay mu); the teacher's ODE step is one step of a registry sampler.
- consistency_training (CT, `--objective consistency`): Song & Dhariwal (2023), iCT. No teacher; an EDM-
  preconditioned network inside a consistency model, the curriculum N(k), lognormal pair sampling, weight
  1 / (sigma_{i+1} - sigma_i), pseudo-Huber metric, the online weights under stop-gradient as the target.
- progressive: Salimans & Ho (2022), Algorithm 2. Rounds halve the steps, each student (initialised from its
  teacher) matching two teacher DDIM steps with one, its EMA the next round's teacher.
- reflow: Liu et al. (2022), Algorithm 1. (noise, sample) pairs from the flow teacher's ODE, the student
  (initialised from the teacher) retrained on their straight interpolation; straightness before and after.

A class-conditional teacher gives a class-conditional student (labels drawn with the data, optional classifier-free
guidance in the teacher's ODE). Every checkpoint is complete (student, EMA, optimizer, RNG and the procedure's own
state), so --resume-from-checkpoint continues a run bit for bit.
"""

import copy
import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffspec.reference.distillation import student_sampling
from diffspec.reference.modelcard import DIFFSPEC_VERSION
from diffspec.reference.schedules import schedule_from_dict as reference_schedule
from diffspec.trainer import checkpoint as ckpt
from diffspec.trainer import distill as D
from diffspec.trainer.data import load_dataset
from diffspec.trainer.grids import GRIDS as GRIDS_
from diffspec.trainer.grids import default_grid
from diffspec.trainer.losses import (
    consistency_loss,
    diffusion_loss,
    ict_weight,
    progressive_distillation_target,
    sample_ict_index,
)
from diffspec.trainer.models import build_model
from diffspec.trainer.parameterizations import broadcast_to_batch, x0_from_output
from diffspec.trainer.schedules import make_schedule, schedule_from_dict

VERSION = DIFFSPEC_VERSION
PROCEDURES = ("consistency", "consistency_training", "progressive", "reflow")
# The teacher's ODE solver of each procedure, chosen by measurement (docs/distillation.md): a student learns the
# map of the teacher's *discretized* ODE, so it inherits that solver's error. On digits the teacher with DDIM on CD's
# 18-step grid scores 2.5 (x floor) and with Heun 1.4 (its 20-step dpmpp_2m: 1.5); PD's first round solved with
# 4 dpmpp_2m steps per student step instead of the paper's 2 DDIM steps: moons 0.60x vs 1.81x the teacher's 20-NFE
# score at 4 NFE, digits 2.28 vs 2.76.
TEACHER_SAMPLER = {"consistency": "heun", "progressive": "dpmpp_2m", "reflow": "flow_euler"}
PD_TEACHER_SUBSTEPS = 4
# CD's N: a student is accurate at the N + 1 times it is trained at, and its k-step grid (`student_sampling`) lands
# on them when k divides N. 20 puts 1, 2, 4 and 5 steps there (Song et al. used 18 on CIFAR-10; on moons a student
# of N = 18 scored 3.1 at 4 steps, between its times, and one of N = 20 1.4).
CD_STEPS = 20


@dataclass
class DistillConfig:
    procedure: str  # one of PROCEDURES
    data: str = "moons"
    output_dir: str = "runs/student"
    teacher: str | None = None  # checkpoint folder or run folder (its latest complete checkpoint)
    teacher_sampler: str | None = None  # TEACHER_SAMPLER[procedure]
    teacher_steps: int | None = None  # CD: N of the discretization (CD_STEPS); PD: the teacher's steps (64); reflow: 32
    teacher_substeps: int = PD_TEACHER_SUBSTEPS  # PD, first round: the teacher's solve per student step
    teacher_guidance_scale: float = 1.0  # class-conditional teachers: CFG in the teacher's ODE (1 = off)
    student_steps: int = 4  # PD: the last round's steps
    cd_grid: str | None = None  # CD discretization: karras, or uniform where sigma_ve is infinite at t_max
    metric: str | None = None  # l2 (CD) | pseudo_huber (CT)
    target_ema: float = 0.95  # CD: mu of the target network
    max_train_steps: int = 2000  # per round for PD
    train_batch_size: int = 256
    learning_rate: float | None = None  # 1e-3 for 2-D points, 2e-4 for images
    lr_warmup_steps: int = 50
    max_grad_norm: float = 1.0
    ema_max_decay: float = 0.999
    schedule: str = "edm"  # CT only: the student's schedule
    num_pairs: int = 20000  # reflow
    pairs_per_step: int = 4  # CD: distinct (t_{n+1}, t_n) pairs per batch (one teacher step each)
    seed: int = 0
    device: str = "cpu"
    n_points: int = 20000
    progress: bool = True
    logging_steps: int = 100
    checkpointing_steps: int | None = None  # a complete checkpoint every N steps (per round for PD)
    checkpoints_total_limit: int | None = None
    resume_from_checkpoint: str | None = None  # 'latest' or a checkpoint folder


# ----------------------------------------------------------------------------------------------------------
# Teachers
# ----------------------------------------------------------------------------------------------------------


def resolve_teacher(path):
    """The complete checkpoint folder a --teacher path names (a run folder resolves to its latest)."""
    if path is None:
        raise ValueError("--teacher: this procedure distils a trained model; pass --teacher CHECKPOINT_DIR")
    p = Path(path)
    if not p.is_dir():
        raise ValueError(f"--teacher {str(p)!r}: no such checkpoint folder")
    if ckpt.list_checkpoints(p):
        latest = ckpt.find_latest(p)
        if latest is None:
            raise ValueError(
                f"--teacher {str(p)!r}: no complete checkpoint-STEP inside (an interrupted save has no manifest.json)"
            )
        return Path(latest)
    try:
        ckpt.verify_manifest(p)
    except ValueError as err:
        raise ValueError(f"--teacher {str(p)!r} is an incomplete checkpoint ({err})") from None
    return p


def load_teacher(path, device):
    """(network fp32 eval on device, frozen; config dict, checkpoint path)."""
    folder = resolve_teacher(path)
    config = ckpt.read_config(folder)
    for key in ("model", "schedule", "parameterization", "data"):
        if key not in config:
            raise ValueError(f"--teacher {str(folder)!r}: config.json has no {key!r}; not a diffspec checkpoint")
    if config.get("learned_variance"):
        raise ValueError(f"--teacher {str(folder)!r} has a learned variance; distillation needs a plain mean model")
    model, config = ckpt.load_for_inference(folder, ema=True)
    return model.to(device).requires_grad_(False), config, folder


def denoiser(model, schedule, parameterization, y=None):
    """denoise(x, t) -> x0_hat through the model's parameterization; t of shape (B,)."""

    def denoise(x, t):
        t = t.to(torch.float32)
        out = model(x.to(torch.float32), t, y).to(x.dtype)
        return x0_from_output(parameterization, out, x, schedule.alpha(t).to(x.dtype), schedule.sigma(t).to(x.dtype))

    return denoise


# ----------------------------------------------------------------------------------------------------------
# The shared optimisation loop, its checkpoints and resume
# ----------------------------------------------------------------------------------------------------------


def _lr(step, cfg, total):
    if cfg.lr_warmup_steps and step < cfg.lr_warmup_steps:
        return cfg.learning_rate * (step + 1) / cfg.lr_warmup_steps
    progress = (step - cfg.lr_warmup_steps) / max(1, total - cfg.lr_warmup_steps)
    return cfg.learning_rate * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


@torch.no_grad()
def _lerp(dst, src, decay):
    torch._foreach_lerp_(list(dst.parameters()), [p.detach() for p in src.parameters()], 1.0 - decay)


# The settings a resumed run must share with the checkpoint's: every one of them changes the math of a step.
RESUME_SETTINGS = (
    "procedure",
    "data",
    "n_points",
    "teacher",
    "teacher_sampler",
    "teacher_steps",
    "teacher_substeps",
    "teacher_guidance_scale",
    "student_steps",
    "cd_grid",
    "metric",
    "target_ema",
    "max_train_steps",
    "train_batch_size",
    "learning_rate",
    "lr_warmup_steps",
    "max_grad_norm",
    "ema_max_decay",
    "schedule",
    "num_pairs",
    "pairs_per_step",
    "seed",
)


class _Run:
    """What every procedure shares: the config, the generator, the log and the run's checkpoints.

    Every checkpoint is complete (student, EMA, optimizer, RNG states, and the procedure's own state: the CD target
    network, the PD round and its teacher, the reflow pairs), written atomically by `checkpoint.save_checkpoint`,
    so a run continues from any of them bit for bit. `resume` is the checkpoint folder to continue from (or None)
    and `resume_state` its state.json: {"step", "procedure", "round", "round_step"}.
    """

    def __init__(self, cfg, out, gen, log, ds, tconfig, tfolder):
        self.cfg, self.out, self.gen, self.log, self.ds = cfg, out, gen, log, ds
        self.tconfig, self.tfolder = tconfig, tfolder
        self.t0 = time.perf_counter()
        self.resume: Path | None = None
        self.resume_state: dict[str, Any] = {}
        self.saved: dict[str, Any] = {}

    def config(self, spec, param, schedule_dict, info):
        _, steps, grid, grid_options = student_sampling(info, reference_schedule(schedule_dict))
        info = {
            **info,
            "steps_for_sampling": steps,
            "grid_for_sampling": grid,
            "grid_options_for_sampling": grid_options,
            "teacher": self.teacher_name,
            "train_seconds": time.perf_counter() - self.t0,
        }
        tc = self.tconfig or {}
        return {
            "diffspec_version": VERSION,
            "model": spec,
            "schedule": schedule_dict,
            "parameterization": param,
            "time_input": "t",
            "data": self.ds.info(),
            "num_classes": tc.get("num_classes"),
            "null_class": tc.get("null_class"),
            "learned_variance": False,
            "student": info,
            "train": {**dataclasses.asdict(self.cfg), "teacher": self.teacher_name},
        }

    @property
    def teacher_name(self):
        return Path(self.tfolder).name if self.tfolder is not None else None

    def save(self, step, *, student, ema, opt, spec, param, schedule_dict, info, state, extra=None):
        """Write checkpoint-STEP (an ordinary checkpoint whose config.json carries the student's card)."""
        config = self.config(spec, param, schedule_dict, info)
        path = ckpt.save_checkpoint(
            self.out,
            step,
            model=student,
            ema=ema,
            optimizer=opt,
            config=config,
            state={"procedure": self.cfg.procedure, **state},
            generators={"distill": self.gen},
            total_limit=self.cfg.checkpoints_total_limit,
            extra=extra,
        )
        tmp = self.out / "config.json.tmp"
        tmp.write_text(json.dumps(ckpt.portable_config(config), indent=2) + "\n")
        tmp.replace(self.out / "config.json")
        self.saved.update(path=path, step=step, info=config["student"], config=config)
        return path

    def resume_from(self, path):
        """Check that checkpoint `path` is this run's (same procedure and settings) and keep it for the loop."""
        saved = ckpt.read_config(path)
        train = saved.get("train") or {}
        state = json.loads((Path(path) / "state.json").read_text())
        if state.get("procedure") != self.cfg.procedure or "round_step" not in state:
            raise ValueError(
                f"--resume-from-checkpoint {str(path)!r}: not a checkpoint of a --distill {self.cfg.procedure} run "
                f"(it was written by {state.get('procedure') or 'the diffusion trainer'})"
            )
        current = ckpt.portable_config({"train": {**dataclasses.asdict(self.cfg), "teacher": self.teacher_name}})
        for key in RESUME_SETTINGS:
            if train.get(key) != current["train"].get(key):
                raise ValueError(
                    f"cannot resume from {str(path)!r}: its {key} is {json.dumps(train.get(key))} but this run has "
                    f"{json.dumps(current['train'].get(key))}; use the same flags or a new --output-dir"
                )
        self.resume, self.resume_state = Path(path), state
        self.log({"phase": "resume", "checkpoint": Path(path).name, "step": int(state["step"])})

    def restore(self, *, student, ema, opt):
        """Load the resumed checkpoint's student, EMA, optimizer and RNG states; returns the steps it had done."""
        ckpt.load_training_state(
            self._resume_dir(), model=student, ema=ema, optimizer=opt, generators={"distill": self.gen}
        )
        return int(self.resume_state["round_step"])

    def extra(self, name):
        return ckpt.load_tensors(self._resume_dir(), name)

    def _resume_dir(self) -> Path:
        if self.resume is None:
            raise ValueError("no checkpoint to resume from")
        return self.resume


def _optimise(student, loss_fn, x_data, y_data, run, *, steps, desc, after_step=None, checkpoint=None, resume=False):
    """AdamW on loss_fn(x0, y, step) for `steps` steps; returns (the student's EMA, the optimizer).

    EMA decay warm-up as in diffusers. checkpoint(done, ema, opt) is called every --checkpointing-steps steps
    (except after the last one: the procedure saves that); with resume, the run's checkpoint restores the student,
    EMA, optimizer and RNG states right here, where the uninterrupted run was, and the loop goes on from its step.
    """
    cfg, gen, log = run.cfg, run.gen, run.log
    ema = copy.deepcopy(student).requires_grad_(False).eval()
    opt = torch.optim.AdamW(student.parameters(), lr=cfg.learning_rate)
    start = run.restore(student=student, ema=ema, opt=opt) if resume else 0
    student.train()
    bar = None
    if cfg.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, initial=start, desc=desc, dynamic_ncols=True, disable=None)  # no bar off a terminal
    n, B, loss_sum, t0 = x_data.shape[0], cfg.train_batch_size, 0.0, time.perf_counter()
    for step in range(start, steps):
        for g in opt.param_groups:
            g["lr"] = _lr(step, cfg, steps)
        idx = torch.randint(0, n, (B,), generator=gen, device=x_data.device)
        x0, y = x_data[idx], (y_data[idx] if y_data is not None else None)
        loss = loss_fn(x0, y, step).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(student.parameters(), cfg.max_grad_norm)
        opt.step()
        _lerp(ema, student, min(cfg.ema_max_decay, (1.0 + step) / (10.0 + step)))
        if after_step is not None:
            after_step(step)
        loss_sum += float(loss.detach())
        if (step + 1) % cfg.logging_steps == 0 or step + 1 == steps:
            rec = {
                "phase": desc,
                "step": step + 1,
                "loss": loss_sum / ((step % cfg.logging_steps) + 1),
                "time": time.perf_counter() - t0,
            }
            log(rec)
            loss_sum = 0.0
            if bar is not None:
                bar.set_postfix(loss=f"{rec['loss']:.4g}")
        if bar is not None:
            bar.update(1)
        if checkpoint is not None and cfg.checkpointing_steps and (step + 1) % cfg.checkpointing_steps == 0:
            if step + 1 < steps:
                checkpoint(step + 1, ema, opt)
    if bar is not None:
        bar.close()
    student.eval()
    return ema, opt


def _groups(index):
    """(value, mask) for every distinct value of an integer tensor (the teacher step runs once per time pair)."""
    for v in torch.unique(index).tolist():
        yield int(v), index == v


def teacher_denoiser(model, schedule, parameterization, y=None, *, guidance_scale=1.0, null_class=None):
    """The teacher's denoise(x, t) for labels y, with classifier-free guidance x0_u + w (x0_c - x0_u) when
    guidance_scale w != 1 (Ho & Salimans 2022, in diffusers' convention: 1 = off; as in latent consistency
    distillation, Luo et al. 2023, the guided teacher's ODE is what the student learns)."""
    cond = denoiser(model, schedule, parameterization, y)
    if y is None or guidance_scale == 1.0:
        return cond
    uncond = denoiser(model, schedule, parameterization, torch.full_like(y, int(null_class)))

    def denoise(x, t):
        x0_u = uncond(x, t)
        return x0_u + guidance_scale * (cond(x, t) - x0_u)

    return denoise


def _teacher(run, model, schedule, param, y):
    return teacher_denoiser(
        model,
        schedule,
        param,
        y,
        guidance_scale=run.cfg.teacher_guidance_scale,
        null_class=(run.tconfig or {}).get("null_class"),
    )


# ----------------------------------------------------------------------------------------------------------
# Procedures
# ----------------------------------------------------------------------------------------------------------


def _consistency_student(teacher_model, teacher_config, sigma_min, sigma_data=0.5):
    """(ConsistencyModel around a copy of the teacher's network, its {"arch", "kwargs"})."""
    spec = {
        "arch": "consistency",
        "kwargs": {
            "inner": teacher_config["model"],
            "schedule": teacher_config["schedule"],
            "parameterization": teacher_config["parameterization"],
            "sigma_min": float(sigma_min),
            "sigma_data": float(sigma_data),
        },
    }
    student = build_model(spec["arch"], **spec["kwargs"])
    student.inner.load_state_dict(teacher_model.state_dict())
    return student, spec


def _run_cd(run, teacher, x_data, y_data):
    cfg, gen, tconfig = run.cfg, run.gen, run.tconfig
    schedule = schedule_from_dict(tconfig["schedule"])
    sampler = cfg.teacher_sampler or TEACHER_SAMPLER["consistency"]
    N = cfg.teacher_steps or CD_STEPS
    grid = cfg.cd_grid or (
        "uniform"
        if not math.isfinite(float(schedule.sigma_ve(torch.tensor(float(schedule.t_max), dtype=torch.float64))))
        else "karras"
    )
    times = D.distillation_times(schedule, N, grid=grid)
    sigma_min = float(schedule.sigma_ve(times[-1:]))
    student, spec = _consistency_student(teacher, tconfig, sigma_min)
    student = student.to(x_data.device)
    target = copy.deepcopy(student).requires_grad_(False).eval()
    if run.resume is not None:
        target.load_state_dict(run.extra("target"))
    param = tconfig["parameterization"]
    metric = cfg.metric or "l2"
    info = {
        "procedure": "consistency_distillation",
        "teacher_sampler": sampler,
        "num_steps": N,
        "grid": grid,
        "metric": metric,
        "target_ema": cfg.target_ema,
        "teacher_guidance_scale": cfg.teacher_guidance_scale,
        "sigma_min": sigma_min,
        "sigma_data": 0.5,
        "sampler": "consistency",
    }

    def loss_fn(x0, y, step):
        B = x0.shape[0]
        n = torch.randint(0, N, (cfg.pairs_per_step,), generator=gen, device=x0.device).repeat_interleave(
            -(-B // cfg.pairs_per_step)
        )[:B]
        t, t_next = times.to(x0.device)[n], times.to(x0.device)[n + 1]
        z = torch.randn(x0.shape, generator=gen, device=x0.device)
        x_t = (
            broadcast_to_batch(schedule.alpha(t), x0).float() * x0
            + broadcast_to_batch(schedule.sigma(t), x0).float() * z
        )
        with torch.no_grad():
            x_next = torch.empty_like(x_t)
            for v, m in _groups(n):
                yy = y[m] if y is not None else None
                x_next[m] = D.teacher_step(
                    _teacher(run, teacher, schedule, param, yy),
                    x_t[m],
                    float(times[v]),
                    float(times[v + 1]),
                    schedule,
                    sampler=sampler,
                ).to(x_t.dtype)
            tgt = target(x_next, t_next.float(), y)
        pred = student(x_t, t.float(), y)
        return consistency_loss(pred, tgt, metric=metric)

    def save(done, ema, opt):
        state = {"step": done, "round": 0, "round_step": done}
        run.save(
            done,
            student=student,
            ema=ema,
            opt=opt,
            spec=spec,
            param="x0",
            schedule_dict=tconfig["schedule"],
            info=info,
            state=state,
            extra={"target": target.state_dict()},
        )

    ema, opt = _optimise(
        student,
        loss_fn,
        x_data,
        y_data,
        run,
        steps=cfg.max_train_steps,
        desc="cd",
        after_step=lambda step: _lerp(target, student, cfg.target_ema),
        checkpoint=save,
        resume=run.resume is not None,
    )
    save(cfg.max_train_steps, ema, opt)


def _run_ct(run, x_data, y_data):
    from diffspec.trainer.config import defaults_for

    cfg, gen, ds = run.cfg, run.gen, run.ds
    schedule = make_schedule(cfg.schedule)
    d = defaults_for(ds.kind, tuple(ds.shape))
    inner = dict(d["model_kwargs"])
    for k in ("channel_mult", "attention_resolutions"):
        if k in inner:
            inner[k] = list(inner[k])
    if d["arch"] == "mlp":
        inner["dim"] = int(np.prod(ds.shape))
    else:
        inner.update(in_channels=ds.shape[0], image_size=ds.shape[-1])
    if y_data is not None:
        inner["num_classes"] = int(ds.num_classes)
    inner["time_scale"] = 250.0
    precond = {
        "arch": "precond",
        "kwargs": {"inner": {"arch": d["arch"], "kwargs": inner}, "schedule": schedule.to_dict(), "sigma_data": 0.5},
    }
    times0, sigmas0 = D.ict_times(schedule, 0, cfg.max_train_steps)
    sigma_min = float(sigmas0[0])
    spec = {
        "arch": "consistency",
        "kwargs": {
            "inner": precond,
            "schedule": schedule.to_dict(),
            "parameterization": "x0",
            "sigma_min": sigma_min,
            "sigma_data": 0.5,
        },
    }
    torch.manual_seed(cfg.seed)
    student = build_model(spec["arch"], **spec["kwargs"]).to(x_data.device)
    metric = cfg.metric or "pseudo_huber"
    K = cfg.max_train_steps
    info = {
        "procedure": "consistency_training",
        "curriculum": "ict",
        "metric": metric,
        "sigma_min": sigma_min,
        "sigma_data": 0.5,
        "sampler": "consistency",
    }

    def loss_fn(x0, y, step):
        times, sigmas = D.ict_times(schedule, step, K)
        i = sample_ict_index(sigmas, x0.shape[0], gen).to(x0.device)
        times, sigmas = times.to(x0.device), sigmas.to(x0.device)
        t_next, t = times[i], times[i + 1]
        z = torch.randn(x0.shape, generator=gen, device=x0.device)
        x_t, x_next = D.consistency_training_pair(x0, z, t.float(), t_next.float(), schedule)
        pred = student(x_t, t.float(), y)
        with torch.no_grad():
            tgt = student(x_next, t_next.float(), y)
        return ict_weight(sigmas[i], sigmas[i + 1]).float() * consistency_loss(pred, tgt, metric=metric)

    def save(done, ema, opt):
        run.save(
            done,
            student=student,
            ema=ema,
            opt=opt,
            spec=spec,
            param="x0",
            schedule_dict=schedule.to_dict(),
            info=info,
            state={"step": done, "round": 0, "round_step": done},
        )

    ema, opt = _optimise(
        student, loss_fn, x_data, y_data, run, steps=K, desc="ct", checkpoint=save, resume=run.resume is not None
    )
    save(K, ema, opt)


def _run_pd(run, teacher, x_data, y_data):
    cfg, gen, tconfig = run.cfg, run.gen, run.tconfig
    schedule = schedule_from_dict(tconfig["schedule"])
    param = tconfig["parameterization"]
    teacher_steps = cfg.teacher_steps or 64
    rounds = D.progressive_rounds(teacher_steps, cfg.student_steps)
    first_sampler = cfg.teacher_sampler or TEACHER_SAMPLER["progressive"]
    M = cfg.max_train_steps
    resume_round = int(run.resume_state["round"]) if run.resume is not None else -1
    for r, steps in enumerate(rounds):
        grid = D.progressive_grid(schedule, steps).to(x_data.device)
        # Round 1 solves the original teacher's ODE (--teacher-sampler, --teacher-substeps); later rounds take two
        # DDIM steps of the previous student, which is itself a DDIM-step model.
        sampler, substeps = (first_sampler, cfg.teacher_substeps) if r == 0 else ("ddim", 2)
        info = {
            "procedure": "progressive_distillation",
            "teacher_steps": teacher_steps,
            "teacher_sampler": first_sampler,
            "teacher_substeps": cfg.teacher_substeps,
            "teacher_guidance_scale": cfg.teacher_guidance_scale,
            "rounds": rounds[: r + 1],
            "student_steps": steps,
            "sampler": "ddim",
        }
        if r < resume_round:
            continue
        resume = r == resume_round
        if resume and r > 0:
            teacher.load_state_dict(run.extra("teacher"))
        student = copy.deepcopy(teacher).requires_grad_(True)
        if resume and int(run.resume_state["round_step"]) == M:  # the checkpoint ends this round
            ema = copy.deepcopy(student).requires_grad_(False)
            ckpt.load_training_state(run.resume, model=student, ema=ema, generators={"distill": gen})
            student.eval()
            teacher = copy.deepcopy(ema).requires_grad_(False).eval()
            if r == len(rounds) - 1:  # the run was complete: its last checkpoint is the result
                run.save(
                    r * M + M,
                    student=student,
                    ema=ema,
                    opt=None,
                    spec=tconfig["model"],
                    param=param,
                    schedule_dict=tconfig["schedule"],
                    info=info,
                    state={},
                )
            continue
        round_teacher = teacher

        def loss_fn(
            x0,
            y,
            step,
            grid=grid,
            steps=steps,
            teacher=round_teacher,
            student=student,
            sampler=sampler,
            substeps=substeps,
        ):
            i = torch.randint(0, steps, (x0.shape[0],), generator=gen, device=x0.device)
            t, t_next = grid[i], grid[i + 1]
            eps = torch.randn(x0.shape, generator=gen, device=x0.device)
            x_t = (
                broadcast_to_batch(schedule.alpha(t), x0).float() * x0
                + broadcast_to_batch(schedule.sigma(t), x0).float() * eps
            )
            with torch.no_grad():
                if (sampler, substeps) == ("ddim", 2):  # the paper's two DDIM steps, per-sample times
                    x_tilde = progressive_distillation_target(
                        _teacher(run, teacher, schedule, param, y), x_t.double(), t, t_next, schedule
                    ).float()
                else:
                    x_tilde = torch.empty_like(x_t)
                    for v, m in _groups(i):
                        yy = y[m] if y is not None else None
                        x_tilde[m] = D.progressive_teacher_target(
                            _teacher(run, teacher, schedule, param, yy),
                            x_t[m].double(),
                            float(grid[v]),
                            float(grid[v + 1]),
                            schedule,
                            sampler=sampler,
                            substeps=substeps,
                        ).float()
            x0_hat = denoiser(student, schedule, param, y)(x_t, t.float())
            return D.progressive_distillation_loss(x0_hat, x_tilde, t.float(), schedule)

        def save(done, ema, opt, r=r, info=info, student=student, round_teacher=round_teacher):
            state = {"step": r * M + done, "round": r, "round_step": done}
            extra = {"teacher": round_teacher.state_dict()} if r > 0 else None
            run.save(
                r * M + done,
                student=student,
                ema=ema,
                opt=opt,
                spec=tconfig["model"],
                param=param,
                schedule_dict=tconfig["schedule"],
                info=info,
                state=state,
                extra=extra,
            )

        ema, opt = _optimise(
            student,
            loss_fn,
            x_data,
            y_data,
            run,
            steps=M,
            desc=f"pd round {r + 1}/{len(rounds)} ({steps} steps)",
            checkpoint=save,
            resume=resume,
        )
        save(M, ema, opt)
        teacher = copy.deepcopy(ema).requires_grad_(False).eval()


def _run_reflow(run, teacher, x_data, y_data):
    cfg, gen, tconfig = run.cfg, run.gen, run.tconfig
    schedule = schedule_from_dict(tconfig["schedule"])
    if tconfig["schedule"].get("name") != "flow":
        raise ValueError(
            f"--distill reflow needs a flow-matching teacher (trained with --schedule flow); the teacher's "
            f"schedule is {tconfig['schedule'].get('name')!r}"
        )
    param = tconfig["parameterization"]
    sampler = cfg.teacher_sampler or TEACHER_SAMPLER["reflow"]
    steps = cfg.teacher_steps or 32
    device = x_data.device
    if run.resume is not None:  # the pairs the interrupted run generated, not a new draw
        saved = run.extra("pairs")
        pairs, y_pairs = saved["pairs"].to(device), (saved["labels"].to(device) if "labels" in saved else None)
    else:
        z = torch.randn((cfg.num_pairs, *x_data.shape[1:]), generator=gen, device=device)
        y_pairs = (
            y_data[torch.randint(0, len(y_data), (cfg.num_pairs,), generator=gen, device=device)]
            if y_data is not None
            else None
        )
        with torch.no_grad():
            x1 = torch.cat(
                [
                    D.reflow_pairs(
                        _teacher(run, teacher, schedule, param, y_pairs[s : s + 4096] if y_pairs is not None else None),
                        z[s : s + 4096],
                        schedule,
                        steps=steps,
                        sampler=sampler,
                    )
                    for s in range(0, cfg.num_pairs, 4096)
                ]
            )
        pairs = torch.cat([z, x1], dim=1) if x_data.ndim == 2 else torch.stack([z, x1], dim=1)
    C = x_data.shape[1]
    student = copy.deepcopy(teacher).requires_grad_(True)
    info = {
        "procedure": "reflow",
        "teacher_sampler": sampler,
        "teacher_steps": steps,
        "num_pairs": cfg.num_pairs,
        "teacher_guidance_scale": cfg.teacher_guidance_scale,
        "sampler": "flow_euler",
    }
    extra = {"pairs": {"pairs": pairs, **({"labels": y_pairs} if y_pairs is not None else {})}}

    def loss_fn(batch, y, step):
        zb, x0 = (batch[:, :C], batch[:, C:]) if batch.ndim == 2 else (batch[:, 0], batch[:, 1])
        t = torch.rand((batch.shape[0],), generator=gen, device=device).clamp(1e-4, 1.0)
        x_t = (
            broadcast_to_batch(schedule.alpha(t), x0).float() * x0
            + broadcast_to_batch(schedule.sigma(t), x0).float() * zb
        )
        return diffusion_loss(student(x_t, t, y), x0, zb, t, schedule, parameterization=param)

    def save(done, ema, opt, info=info):
        run.save(
            done,
            student=student,
            ema=ema,
            opt=opt,
            spec=tconfig["model"],
            param=param,
            schedule_dict=tconfig["schedule"],
            info=info,
            state={"step": done, "round": 0, "round_step": done},
            extra=extra,
        )

    ema, opt = _optimise(
        student,
        loss_fn,
        pairs,
        y_pairs,
        run,
        steps=cfg.max_train_steps,
        desc="reflow",
        checkpoint=save,
        resume=run.resume is not None,
    )
    probe_gen = torch.Generator(device=device).manual_seed(cfg.seed + 99)
    probe = torch.randn((1000, *x_data.shape[1:]), generator=probe_gen, device=device)
    probe_y = (
        y_data[torch.randint(0, len(y_data), (1000,), generator=probe_gen, device=device)]
        if y_data is not None
        else None
    )
    with torch.no_grad():
        _, s_before = D.straightness(_teacher(run, teacher, schedule, param, probe_y), probe, schedule, steps=steps)
        _, s_after = D.straightness(denoiser(ema, schedule, param, probe_y), probe, schedule, steps=steps)
    info = {
        **info,
        "straightness_teacher": float(s_before.mean()),
        "straightness_student": float(s_after.mean()),
    }
    run.log(
        {
            "phase": "reflow",
            "straightness_teacher": info["straightness_teacher"],
            "straightness_student": info["straightness_student"],
        }
    )
    save(cfg.max_train_steps, ema, opt, info=info)


# ----------------------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------------------


def check_config(cfg):
    if cfg.procedure not in PROCEDURES:
        raise ValueError(f"--distill {cfg.procedure!r}: expected one of consistency, progressive, reflow")
    for name in ("max_train_steps", "train_batch_size", "num_pairs", "logging_steps", "pairs_per_step"):
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"--{name.replace('_', '-')}={v!r}: expected an integer >= 1")
    for name in ("teacher_steps", "checkpointing_steps", "checkpoints_total_limit"):
        v = getattr(cfg, name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ValueError(f"--{name.replace('_', '-')}={v!r}: expected an integer >= 1")
    if isinstance(cfg.teacher_substeps, bool) or not isinstance(cfg.teacher_substeps, int) or cfg.teacher_substeps < 1:
        raise ValueError(f"--teacher-substeps={cfg.teacher_substeps!r}: expected an integer >= 1")
    if cfg.learning_rate is not None and not (cfg.learning_rate > 0 and math.isfinite(cfg.learning_rate)):
        raise ValueError(f"--learning-rate={cfg.learning_rate!r}: expected a finite number > 0")
    if not (isinstance(cfg.teacher_guidance_scale, (int, float)) and math.isfinite(cfg.teacher_guidance_scale)):
        raise ValueError(f"--teacher-guidance-scale={cfg.teacher_guidance_scale!r}: expected a finite number (1 = off)")
    if not 0 <= cfg.target_ema < 1:
        raise ValueError(f"--target-ema={cfg.target_ema!r}: expected a number in [0, 1)")
    if cfg.metric not in (None, "l2", "pseudo_huber"):
        raise ValueError(f"--consistency-metric={cfg.metric!r}: expected one of l2, pseudo_huber")
    if cfg.procedure == "consistency_training":
        if cfg.teacher is not None:
            raise ValueError(
                "--objective consistency trains without a teacher; for distillation use --distill "
                "consistency --teacher CKPT"
            )
    elif cfg.teacher is None:
        raise ValueError(f"--distill {cfg.procedure} needs --teacher CHECKPOINT_DIR (a trained model to distil)")
    if cfg.procedure == "progressive":
        D.progressive_rounds(cfg.teacher_steps or 64, cfg.student_steps)
    if (
        cfg.teacher_sampler is not None
        and cfg.procedure in ("consistency", "reflow", "progressive")
        and cfg.teacher_sampler not in D.DETERMINISTIC_TEACHER_SAMPLERS
    ):
        raise ValueError(
            f"--teacher-sampler {cfg.teacher_sampler!r}: expected a deterministic ODE sampler, one of "
            f"{list(D.DETERMINISTIC_TEACHER_SAMPLERS)}"
        )


def _labels(cfg, ds, tconfig, tfolder):
    """The labels the student trains with: the data's, for a class-conditional teacher; None otherwise."""
    k = tconfig.get("num_classes") if tconfig else None
    if k is None:
        if cfg.teacher_guidance_scale != 1.0:
            raise ValueError(
                f"--teacher-guidance-scale={cfg.teacher_guidance_scale!r}: guidance needs a class-conditional "
                f"teacher; {str(tfolder)!r} is unconditional"
            )
        return None
    if ds.y is None:
        raise ValueError(
            f"--teacher {str(tfolder)!r} is class-conditional ({k} classes) but --data {cfg.data!r} has no labels"
        )
    if int(ds.y.max()) >= int(k):
        raise ValueError(
            f"--data {cfg.data!r} has labels up to {int(ds.y.max())}; the teacher knows {k} classes (0..{int(k) - 1})"
        )
    if cfg.teacher_guidance_scale != 1.0 and tconfig.get("null_class") is None:
        raise ValueError(
            f"--teacher-guidance-scale={cfg.teacher_guidance_scale!r}: the teacher {str(tfolder)!r} has no null "
            "class (it was trained without label dropout), so it has no unconditional prediction to guide with"
        )
    return torch.as_tensor(np.asarray(ds.y), dtype=torch.long)


def distill(cfg: DistillConfig) -> dict:
    """Run one procedure; write OUTPUT_DIR/checkpoint-STEP folders and log.jsonl; returns {"checkpoint", "seconds",
    ...}. With --checkpointing-steps N a complete checkpoint every N steps (per round for PD); with
    --resume-from-checkpoint the run continues from one bit for bit."""
    check_config(cfg)
    device = torch.device(cfg.device)
    out = Path(cfg.output_dir)
    resume = ckpt.resume_path(cfg.resume_from_checkpoint, out)
    teacher = tconfig = tfolder = None
    if cfg.procedure != "consistency_training":
        teacher, tconfig, tfolder = load_teacher(cfg.teacher, device)
    data_name = tconfig["data"].get("name", cfg.data) if tconfig and cfg.data is None else cfg.data
    ds = load_dataset(data_name, n_points=cfg.n_points, seed=cfg.seed)
    if tconfig is not None and list(tconfig["data"]["shape"]) != list(ds.shape):
        raise ValueError(
            f"--data {cfg.data!r} has samples of shape {list(ds.shape)}; the teacher was trained on "
            f"{list(tconfig['data']['shape'])}"
        )
    y_data = _labels(cfg, ds, tconfig, tfolder)
    if y_data is not None:
        y_data = y_data.to(device)
    if cfg.learning_rate is None:
        cfg = dataclasses.replace(cfg, learning_rate=1e-3 if ds.kind == "points" else 2e-4)
    x_data = torch.as_tensor(ds.x, dtype=torch.float32, device=device)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "log.jsonl"

    last = {}

    def log(rec):
        last.update(rec)
        with open(log_path, "a") as f:
            f.write(json.dumps(rec) + "\n")

    run = _Run(cfg, out, gen, log, ds, tconfig, tfolder)
    if resume is not None:
        run.resume_from(resume)
    match cfg.procedure:
        case "consistency":
            _run_cd(run, teacher, x_data, y_data)
        case "consistency_training":
            _run_ct(run, x_data, None)
        case "progressive":
            _run_pd(run, teacher, x_data, y_data)
        case "reflow":
            _run_reflow(run, teacher, x_data, y_data)
    seconds = time.perf_counter() - run.t0
    return {
        "checkpoint": str(run.saved["path"]),
        "step": run.saved["step"],
        "seconds": seconds,
        "student": run.saved["info"],
        "config": run.saved["config"],
        "final_loss": float(last.get("loss", float("nan"))),
    }


# ----------------------------------------------------------------------------------------------------------
# Sampling a checkpoint's network (tests and benchmarks)
# ----------------------------------------------------------------------------------------------------------


@torch.no_grad()
def sample_model(model, config, *, n, sampler, steps, seed=0, grid=None, device="cpu", labels=None):
    """n samples (model space, float64 numpy) of a checkpoint's network with a trainer sampler on `grid`; labels:
    n class labels for a class-conditional network (None: its null class)."""
    from diffspec.trainer.samplers import SAMPLERS

    schedule = schedule_from_dict(config["schedule"])
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}: expected one of {sorted(SAMPLERS)}")
    options: dict = {}
    if grid is None:  # the student's own grid, else the default one
        recipe = student_sampling(config.get("student"), reference_schedule(config["schedule"]))
        grid, options = recipe[2:] if recipe else (default_grid(schedule), {})
    times = torch.as_tensor(GRIDS_[grid](schedule, steps, **options), dtype=torch.float64)
    gen = torch.Generator(device=device).manual_seed(seed)
    x_T = torch.randn((n, *config["data"]["shape"]), generator=gen, device=device, dtype=torch.float64)
    x_T = x_T * float(schedule.sigma(times[:1]))
    model = model.to(device).eval()
    y = None if labels is None else torch.as_tensor(np.asarray(labels), dtype=torch.long, device=device)
    den = denoiser(model, schedule, config["parameterization"], y)
    return SAMPLERS[sampler](den, x_T, times, schedule, noise=gen).cpu().numpy()


# ----------------------------------------------------------------------------------------------------------
# Command line: `diffspec-train --distill consistency|progressive|reflow --teacher CKPT`, `--objective consistency`
# ----------------------------------------------------------------------------------------------------------


def add_distill_arguments(parser) -> None:
    """The distillation flags of `diffspec-train` (the shared ones, --data, --output-dir, ..., are the trainer's)."""
    g = parser.add_argument_group("few-step students (docs/distillation.md)")

    def add(name, **kw):
        g.add_argument("--" + name.replace("_", "-"), *(["--" + name] if "_" in name else []), dest=name, **kw)

    add("distill", default=None, help="consistency, progressive or reflow: train a few-step student of --teacher")
    add("objective", default="diffusion", help="diffusion, or consistency (consistency training, iCT, no teacher)")
    add("teacher", default=None, help="the teacher: a checkpoint folder or a run folder (its latest checkpoint)")
    add(
        "teacher_sampler",
        default=None,
        help="the teacher's ODE solver, a deterministic sampler: consistency default heun, progressive (first "
        "round) dpmpp_2m, reflow flow_euler",
    )
    add(
        "teacher_steps",
        type=int,
        default=None,
        help=f"consistency: N of the discretization ({CD_STEPS}); progressive: the "
        "teacher's sampling steps (64); reflow: ODE steps of the pairs (32)",
    )
    add("student_steps", type=int, default=4, help="progressive: the last student's steps (teacher_steps / 2^k)")
    add("distill_grid", default=None, help="consistency: the discretization grid (karras; uniform for flow)")
    add("consistency_metric", default=None, help="l2 (distillation default) or pseudo_huber (training default)")
    add("target_ema", type=float, default=0.95, help="consistency distillation: decay mu of the target network")
    add("num_pairs", type=int, default=20000, help="reflow: (noise, sample) pairs generated by the teacher")
    add("pairs_per_step", type=int, default=4, help="consistency distillation: distinct time pairs per batch")
    add(
        "teacher_substeps",
        type=int,
        default=PD_TEACHER_SUBSTEPS,
        help=f"progressive: steps of the teacher's solve (--teacher-sampler) per first-round student step (default "
        f"{PD_TEACHER_SUBSTEPS}; the paper's target: --teacher-sampler ddim --teacher-substeps 2)",
    )
    add(
        "teacher_guidance_scale",
        type=float,
        default=1.0,
        help="class-conditional teachers: classifier-free guidance in the teacher's ODE (diffusers convention, 1 = "
        "off); the student learns the guided teacher and samples without guidance",
    )


def distill_requested(args) -> bool:
    """True when the command line asks for a student (then `run_distill` replaces the diffusion trainer)."""
    if args.objective not in ("diffusion", "consistency"):
        raise ValueError(f"--objective {args.objective!r}: expected one of diffusion, consistency")
    if args.teacher is not None and args.distill is None:
        raise ValueError("--teacher is used with --distill consistency|progressive|reflow")
    if args.distill is not None and args.objective == "consistency":
        raise ValueError("--objective consistency trains without a teacher; drop --distill (or the objective)")
    return args.distill is not None or args.objective == "consistency"


def config_from_args(args) -> DistillConfig:
    procedure = "consistency_training" if args.objective == "consistency" else args.distill
    defaults = {f.name: f.default for f in dataclasses.fields(DistillConfig)}

    def pick(name, value):
        return defaults[name] if value is None else value

    return DistillConfig(
        procedure=procedure,
        data=args.data,
        output_dir=args.output_dir,
        teacher=args.teacher,
        teacher_sampler=args.teacher_sampler,
        teacher_steps=args.teacher_steps,
        student_steps=args.student_steps,
        cd_grid=args.distill_grid,
        metric=args.consistency_metric,
        target_ema=args.target_ema,
        max_train_steps=pick("max_train_steps", args.max_train_steps),
        train_batch_size=pick("train_batch_size", args.train_batch_size),
        learning_rate=pick("learning_rate", args.learning_rate),
        lr_warmup_steps=pick("lr_warmup_steps", args.lr_warmup_steps),
        max_grad_norm=args.max_grad_norm,
        ema_max_decay=pick("ema_max_decay", args.ema_max_decay),
        schedule=pick("schedule", args.schedule),
        num_pairs=args.num_pairs,
        pairs_per_step=args.pairs_per_step,
        seed=args.seed,
        device=args.device or ("cuda" if torch.cuda.is_available() else "cpu"),
        progress=not args.no_progress,
        logging_steps=args.logging_steps,
        teacher_substeps=args.teacher_substeps,
        teacher_guidance_scale=args.teacher_guidance_scale,
        checkpointing_steps=args.checkpointing_steps,
        checkpoints_total_limit=args.checkpoints_total_limit,
        resume_from_checkpoint=args.resume_from_checkpoint,
    )


def run_distill(args) -> dict:
    """`distill(config_from_args(args))`, returning what `diffspec-train` prints."""
    return distill(config_from_args(args))

"""`diffspec-train` / `python -m diffspec.trainer`: flags follow the diffusers training scripts
(--output-dir, --max-train-steps, --train-batch-size, --train-data-dir, --resolution, ...); the underscore spellings
are accepted too.

Every error a user can cause ends in one line on stderr and a non-zero exit, never a traceback: 2 for a bad flag or
bad data, 1 for a failure of the machine (a file that cannot be written, memory, the device), 130 for Ctrl-C (which
names the last complete checkpoint, from which --resume-from-checkpoint latest continues).
"""

import argparse
import json
import os
import sys

from diffspec.trainer.config import LRScheduler, ReportTo, TrainConfig

PROG = "diffspec-train"


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not usage + error
        print(f"{PROG}: error: {message} (see {PROG} --help)", file=sys.stderr)
        raise SystemExit(2)


def _json_dict(text):
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"{text!r} is not JSON ({err})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a JSON object like '{{\"T\": 1000}}'")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=PROG,
        description="Train a diffusion model (diffspec trainer).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )

    def add(name, *aliases, **kw):
        dashed = "--" + name.replace("_", "-")
        flags = [dashed] if "-" not in name and "_" not in name else [dashed, "--" + name]
        for alias in aliases:
            flags += ["--" + alias.replace("_", "-"), "--" + alias] if "_" in alias else ["--" + alias]
        p.add_argument(*flags, dest=name, **kw)

    add(
        "data",
        "train_data_dir",
        default="moons",
        help="moons, swiss_roll, 8gaussians, checkerboard, mixture, "
        "digits, mnist5k, a folder of images (streamed), or a .npy/.npz file",
    )
    add("output_dir", default="runs/out", help="where checkpoints, log.jsonl, samples/ and logs/ go")
    add("max_train_steps", type=int, default=None, help="optimizer steps (default per data set)")
    add("train_batch_size", type=int, default=None, help="per device (default per data set)")
    add("learning_rate", type=float, default=None)
    add("lr_scheduler", default=LRScheduler.COSINE.value, help="constant or cosine")
    add("lr_warmup_steps", type=int, default=None)
    add("adam_beta1", type=float, default=0.9)
    add("adam_beta2", type=float, default=0.999)
    add("adam_weight_decay", type=float, default=0.0)
    add("adam_epsilon", type=float, default=1e-8)
    add("max_grad_norm", type=float, default=1.0, help="gradient clipping; 0 disables")
    add("gradient_accumulation_steps", type=int, default=1)
    add("mixed_precision", default="auto", help="auto (bf16 on CUDA), no, bf16")
    add("no_ema", action="store_true", help="train without an EMA copy")
    add("ema_max_decay", type=float, default=None)
    add(
        "arch",
        choices=["mlp", "unet", "dit", "diffusers-unet2d", "diffusers-dit"],
        default=None,
        help="network (default per data set); diffusers-*: diffusers' UNet2DModel / DiTTransformer2DModel",
    )
    add(
        "save_diffusers",
        action="store_true",
        help="at the end, write the EMA model as a diffusers folder "
        "OUTPUT_DIR/diffusers (DDPMPipeline.from_pretrained loads it); needs --arch diffusers-*",
    )
    add("model_kwargs", type=_json_dict, default={}, help="JSON overrides of the network's options")
    add(
        "precond",
        default=None,
        help="none or edm (EDM preconditioning; then predicts x0). Default: edm with the "
        "edm schedule (and --weighting edm) unless --prediction-type is given, else none",
    )
    add(
        "schedule",
        default=None,
        help="noise schedule name (default: edm for 2-D points, with EDM's preconditioning "
        "and weighting; linear, DDPM's T=1000, for images, with --learned-variance, --prediction-type, "
        "--precond none or --num-train-timesteps)",
    )
    add("schedule_kwargs", type=_json_dict, default={}, help="JSON schedule parameters, e.g. '{\"T\": 1000}'")
    add("num_train_timesteps", type=int, default=None, help="T of a discrete schedule")
    add("prediction_type", default=None, help="default v; eps|epsilon, x0|sample, v|v_prediction, flow, score")
    add("weighting", default=None, help="loss weighting in lam: uniform, x0, snr, min_snr, p2, edm, sigmoid, v, flow")
    add("snr_gamma", type=float, default=None, help="min-SNR-gamma weighting (Hang et al. 2023), e.g. 5")
    add("timestep_sampling", default=None, help="uniform_discrete, uniform, logit_normal, edm_lognormal, importance")
    add("noise_offset", type=float, default=0.0)
    add(
        "learned_variance",
        action="store_true",
        help="iDDPM learned variance (2C outputs, hybrid loss L_simple + "
        "lambda_vlb L_vlb); discrete VP schedules only; validation then samples with ddpm variance=learned_range",
    )
    add("lambda_vlb", type=float, default=0.001, help="weight of L_vlb in the hybrid loss (with --learned-variance)")
    add("class_conditional", choices=["auto", "yes", "no"], default="auto", help="use labels when the data has them")
    add("cond_drop_prob", type=float, default=0.1, help="label dropout to the null class (for CFG)")
    add("seed", type=int, default=0)
    add("resolution", type=int, default=None, help="image folders: resize the shorter side to N, then crop N x N")
    add("center_crop", action="store_true", help="with --resolution: crop at the centre (default: a random place)")
    add("random_flip", action="store_true", help="images: flip left-right with probability 1/2")
    add(
        "dataloader_num_workers",
        type=int,
        default=None,
        help="image folders: decoding processes (default min(4, CPUs - 1))",
    )
    add("checkpointing_steps", type=int, default=None)
    add("checkpoints_total_limit", type=int, default=None)
    add("resume_from_checkpoint", default=None, help="'latest' or a checkpoint folder")
    add("validation_steps", type=int, default=None, help="write a sample grid every N steps (and at the end)")
    add(
        "validation_sampler",
        default=None,
        help="default dpmpp_2m; ddpm (variance=learned_range) with "
        "--learned-variance; another sampler given with --learned-variance uses the mean half only",
    )
    add("num_inference_steps", type=int, default=20)
    add("num_validation_samples", type=int, default=None)
    add("validation_guidance_scale", type=float, default=1.0, help="CFG scale, diffusers convention (1 = off)")
    add("logging_steps", type=int, default=50)
    add(
        "report_to",
        default=ReportTo.NONE.value,
        help="also log to tensorboard (event files in OUTPUT_DIR/logs), wandb (offline, in OUTPUT_DIR/logs) or none",
    )
    add(
        "threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: 1 for small networks or on CUDA, else one per core; docs/training.md)",
    )
    add("torch_compile", action="store_true")
    add("device", default=None, help="cpu, cuda, cuda:1 (default: cuda when available)")
    add("no_progress", action="store_true", help="no progress bar (there is none when stderr is not a terminal)")
    from diffspec.trainer.distill_loop import add_distill_arguments

    add_distill_arguments(p)  # --distill, --teacher, --objective consistency, ...
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    schedule_kwargs = dict(args.schedule_kwargs)
    if args.num_train_timesteps is not None:
        schedule_kwargs["T"] = args.num_train_timesteps
    return TrainConfig(
        data=args.data,
        output_dir=args.output_dir,
        max_train_steps=args.max_train_steps,
        train_batch_size=args.train_batch_size,
        learning_rate=args.learning_rate,
        lr_scheduler=args.lr_scheduler,
        lr_warmup_steps=args.lr_warmup_steps,
        adam_beta1=args.adam_beta1,
        adam_beta2=args.adam_beta2,
        adam_weight_decay=args.adam_weight_decay,
        adam_epsilon=args.adam_epsilon,
        max_grad_norm=args.max_grad_norm,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        use_ema=not args.no_ema,
        ema_max_decay=args.ema_max_decay,
        arch=args.arch,
        model_kwargs=args.model_kwargs,
        precond=args.precond,
        schedule=args.schedule,
        schedule_kwargs=schedule_kwargs,
        prediction_type=args.prediction_type,
        weighting=args.weighting,
        snr_gamma=args.snr_gamma,
        timestep_sampling=args.timestep_sampling,
        noise_offset=args.noise_offset,
        learned_variance=args.learned_variance,
        lambda_vlb=args.lambda_vlb,
        class_conditional={"auto": None, "yes": True, "no": False}[args.class_conditional],
        cond_drop_prob=args.cond_drop_prob,
        seed=args.seed,
        checkpointing_steps=args.checkpointing_steps,
        checkpoints_total_limit=args.checkpoints_total_limit,
        resume_from_checkpoint=args.resume_from_checkpoint,
        validation_steps=args.validation_steps,
        validation_sampler=args.validation_sampler,
        num_inference_steps=args.num_inference_steps,
        num_validation_samples=args.num_validation_samples,
        validation_guidance_scale=args.validation_guidance_scale,
        logging_steps=args.logging_steps,
        torch_compile=args.torch_compile,
        device=args.device,
        progress=not args.no_progress,
        threads=args.threads,
        report_to=args.report_to,
        resolution=args.resolution,
        center_crop=args.center_crop,
        random_flip=args.random_flip,
        dataloader_num_workers=args.dataloader_num_workers,
        save_diffusers=args.save_diffusers,
    )


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _interrupted(output_dir: str) -> str:
    from diffspec.trainer import checkpoint as ckpt

    try:
        latest = ckpt.find_latest(output_dir)
    except (OSError, ValueError):
        latest = None
    if latest is None:
        return f"interrupted; no complete checkpoint in {output_dir!r} yet"
    return (
        f"interrupted; the last complete checkpoint is {str(latest)!r} (continue with --resume-from-checkpoint latest)"
    )


def main(argv: list[str] | None = None) -> int:
    from diffspec.trainer.loop import train
    from safetensors import SafetensorError

    args = build_parser().parse_args(argv)

    def fail(message: str, code: int) -> int:
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return code

    try:
        from diffspec.trainer import distill_loop

        if distill_loop.distill_requested(args):  # a few-step student (docs/distillation.md)
            result = distill_loop.run_distill(args)
        else:
            result = train(config_from_args(args))
    except KeyboardInterrupt:
        print(f"{PROG}: {_interrupted(args.output_dir)}", file=sys.stderr)
        return 130
    except ValueError as err:  # bad flags or data, named (json.JSONDecodeError included)
        return fail(_first_line(err), 2)
    except MemoryError:
        return fail("out of memory (try a smaller --train-batch-size, --resolution or network)", 1)
    except SafetensorError as err:
        return fail(f"a checkpoint file cannot be read: {_first_line(err)}", 1)
    except OSError as err:
        where = f" {err.filename!r}" if getattr(err, "filename", None) else ""
        return fail(f"{err.strerror or _first_line(err)}{where}", 1)
    except (RuntimeError, AssertionError) as err:  # torch: device not available, out of device memory, shapes
        return fail(f"torch: {_first_line(err)}", 1)
    if int(os.environ.get("RANK", "0")) == 0:
        print(
            f"done: {result['step']} steps in {result['seconds']:.1f} s, final loss {result['final_loss']:.4f}; "
            f"checkpoint {result['checkpoint']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Experiment trackers beside the JSONL log: `--report-to tensorboard` writes event files under OUTPUT_DIR/logs
through `torch.utils.tensorboard`; `--report-to wandb` logs to Weights & Biases in offline mode (files under
OUTPUT_DIR/logs/wandb, uploaded later with `wandb sync` if you wish). Both record the loss, the learning rate and
the other logged scalars at each logging step, and the validation pictures.
"""

import os
from pathlib import Path
from typing import Any

import numpy as np
from diffspec.trainer.config import ReportTo


class Tracker:
    """No tracker: every call does nothing."""

    def scalars(self, step: int, values: dict) -> None:
        pass

    def image(self, step: int, tag: str, pixels: np.ndarray) -> None:
        pass

    def close(self) -> None:
        pass


class TensorBoard(Tracker):
    def __init__(self, logdir: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ValueError(
                "--report-to tensorboard needs the tensorboard package: pip install tensorboard "
                "(or pip install 'diffspec[train]')"
            ) from None
        self.writer = SummaryWriter(log_dir=str(logdir))

    def scalars(self, step, values):
        for k, v in values.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                self.writer.add_scalar(f"train/{k}", v, global_step=step)
        self.writer.flush()

    def image(self, step, tag, pixels):
        self.writer.add_image(tag, pixels, global_step=step, dataformats="HW" if pixels.ndim == 2 else "HWC")
        self.writer.flush()

    def close(self):
        self.writer.close()


# wandb's own folders (environment variable -> sub-folder of OUTPUT_DIR/logs/wandb-home)
WANDB_FOLDERS = {
    "WANDB_CACHE_DIR": "cache",
    "WANDB_CONFIG_DIR": "config",
    "WANDB_DATA_DIR": "data",
    "WANDB_ARTIFACT_DIR": "artifacts",
}


class Wandb(Tracker):
    """Weights & Biases in offline mode, every file under OUTPUT_DIR/logs: the run under logs/wandb, and wandb's
    cache, config and data folders (its service's debug logs go to the cache) under logs/wandb-home unless the
    user has pointed WANDB_CACHE_DIR, WANDB_CONFIG_DIR, WANDB_DATA_DIR or WANDB_ARTIFACT_DIR elsewhere. No
    system monitor (it probes cloud metadata addresses; the JSONL log has the step rate and CPU time) and no
    capture of the console."""

    def __init__(self, logdir: Path, config: dict):
        try:
            import wandb
        except ImportError:
            raise ValueError(
                "--report-to wandb needs the wandb package: pip install wandb (or pip install 'diffspec[wandb]')"
            ) from None
        self.wandb = wandb
        self._saved_env = {var: os.environ.get(var) for var in WANDB_FOLDERS}
        for var, sub in WANDB_FOLDERS.items():
            if self._saved_env[var] is None:
                os.environ[var] = str(logdir / "wandb-home" / sub)
        logdir.mkdir(parents=True, exist_ok=True)
        quiet: dict[str, Any] = dict(console="off", x_disable_stats=True, x_disable_machine_info=True)
        try:
            settings = wandb.Settings(**quiet)
        except (TypeError, ValueError):  # a wandb without these settings
            settings = wandb.Settings(console="off")
        try:
            self.run = wandb.init(project="diffspec", mode="offline", dir=str(logdir), config=config, settings=settings)
        except BaseException:
            self._restore_env()
            raise

    def scalars(self, step, values):
        self.run.log({f"train/{k}": v for k, v in values.items() if v is not None}, step=step)

    def image(self, step, tag, pixels):
        self.run.log({tag: self.wandb.Image(pixels)}, step=step)

    def close(self):
        try:
            self.run.finish()
            self.wandb.teardown()  # its service process read the folders above when it started: the next run's own
        finally:
            self._restore_env()

    def _restore_env(self):
        for var, value in self._saved_env.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value


def make_tracker(report_to: ReportTo, output_dir: Path, config: dict) -> Tracker:
    """The tracker for --report-to, writing under OUTPUT_DIR/logs."""
    logdir = Path(output_dir) / "logs"
    if report_to == ReportTo.TENSORBOARD:
        return TensorBoard(logdir)
    if report_to == ReportTo.WANDB:
        return Wandb(logdir, config)
    return Tracker()

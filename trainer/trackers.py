"""Experiment trackers beside the JSONL log: `--report-to tensorboard` writes event files under OUTPUT_DIR/logs
through `torch.utils.tensorboard`; `--report-to wandb` logs to Weights & Biases in offline mode (files under
OUTPUT_DIR/logs/wandb, uploaded later with `wandb sync` if you wish). Both record the loss, the learning rate and
the other logged scalars at each logging step, and the validation pictures.
"""

from pathlib import Path

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


class Wandb(Tracker):
    def __init__(self, logdir: Path, config: dict):
        try:
            import wandb
        except ImportError:
            raise ValueError("--report-to wandb needs the wandb package: pip install wandb") from None
        self.wandb = wandb
        logdir.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(project="diffspec", mode="offline", dir=str(logdir), config=config)

    def scalars(self, step, values):
        self.run.log({f"train/{k}": v for k, v in values.items() if v is not None}, step=step)

    def image(self, step, tag, pixels):
        self.run.log({tag: self.wandb.Image(pixels)}, step=step)

    def close(self):
        self.run.finish()


def make_tracker(report_to: ReportTo, output_dir: Path, config: dict) -> Tracker:
    """The tracker for --report-to, writing under OUTPUT_DIR/logs."""
    logdir = Path(output_dir) / "logs"
    if report_to == ReportTo.TENSORBOARD:
        return TensorBoard(logdir)
    if report_to == ReportTo.WANDB:
        return Wandb(logdir, config)
    return Tracker()

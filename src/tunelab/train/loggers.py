"""Where training metrics go: metrics.jsonl always, TensorBoard when `train.report_to: tensorboard`.

Each record is a flat dict with a "step"; every other numeric value becomes a TensorBoard scalar
named by its key under the `train/` (loss, lr, ...) or `eval/` (val_*, accuracy, ...) group.
"""

from __future__ import annotations

from tunelab.errors import TunelabError


class MetricsLogger:
    def __init__(self, run, report_to: str = "none"):
        self.run = run
        self.writer = None
        if report_to == "tensorboard":
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise TunelabError("train.report_to is 'tensorboard' but the tensorboard package is missing",
                                   where="train.report_to", hint="pip install tensorboard (or tunelab[tensorboard])") from None
            self.writer = SummaryWriter(log_dir=str(run.path / "tensorboard"))

    def __call__(self, record: dict) -> None:
        self.run.log(record)
        if self.writer is None:
            return
        step = int(record.get("step", 0))
        for key, val in record.items():
            if key in ("step", "epoch") or isinstance(val, bool) or not isinstance(val, (int, float)):
                continue
            group = "train" if key in ("loss", "lr", "grad_norm", "tokens_per_s", "elapsed_s", "peak_rss_mb") else "eval"
            self.writer.add_scalar(f"{group}/{key}", val, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

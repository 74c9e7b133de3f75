"""Optional experiment tracking from the training loop: TensorBoard, Weights & Biases or MLflow.

`--set train.log=tensorboard|wandb|mlflow` picks one; each is imported only when chosen (`pip install
'imprint[track]'` brings all three). Every step logs the loss, the learning rate and tokens/s; the run's
settings go in as hyper-parameters. Files go under the workspace's `runs/<name>/` (TensorBoard events in
`runs/<name>/tensorboard/`, MLflow's file store in `runs/<name>/mlruns/` unless MLFLOW_TRACKING_URI says
otherwise, W&B's local files in `runs/<name>/wandb/`, synced as W&B is configured: `WANDB_MODE=offline` keeps
them local).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from imprint.errors import ImprintError

TRACKERS = ("tensorboard", "wandb", "mlflow")


class Tracker(Protocol):
    def log(self, step: int, metrics: dict[str, float]) -> None: ...

    def close(self) -> None: ...


def _flat(config: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out |= _flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value if isinstance(value, int | float | str | bool) else str(value)
    return out


def _need(module: str, kind: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImprintError(f"train.log={kind} needs the {kind} package: pip install 'imprint[track]'") from exc


class TensorBoardTracker:
    def __init__(self, directory: Path, name: str, config: dict):
        _need("tensorboard", "tensorboard")
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(directory / "tensorboard"))
        self.writer.add_text("config", "\n".join(f"    {k} = {v}" for k, v in _flat(config).items()))

    def log(self, step: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(f"train/{key}", value, step)

    def close(self) -> None:
        self.writer.close()


class WandbTracker:
    def __init__(self, directory: Path, name: str, config: dict):
        wandb = _need("wandb", "wandb")
        directory.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "imprint"), name=name, dir=str(directory), config=config
        )

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self.run.log({f"train/{k}": v for k, v in metrics.items()}, step=step)

    def close(self) -> None:
        self.run.finish()


class MlflowTracker:
    def __init__(self, directory: Path, name: str, config: dict):
        self.mlflow = _need("mlflow", "mlflow")
        if not os.environ.get("MLFLOW_TRACKING_URI"):
            self.mlflow.set_tracking_uri((directory / "mlruns").resolve().as_uri())
        self.mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME", "imprint"))
        self.mlflow.start_run(run_name=name)
        self.mlflow.log_params({k: str(v)[:500] for k, v in _flat(config).items()})

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self.mlflow.log_metrics({f"train.{k}": v for k, v in metrics.items()}, step=step)

    def close(self) -> None:
        self.mlflow.end_run()


def check_available(kind: str) -> None:
    """Fail early, before any slow work, when the chosen tracker's package is not installed."""
    _need(kind, kind)


def open_tracker(kind: str, directory: Path, name: str, config: dict) -> Tracker | None:
    """The tracker `kind` ('' for none) writing under `directory`; a clear error when its package is missing."""
    if not kind:
        return None
    trackers = {"tensorboard": TensorBoardTracker, "wandb": WandbTracker, "mlflow": MlflowTracker}
    if kind not in trackers:
        raise ImprintError(f"unknown train.log {kind!r}: use one of {', '.join(TRACKERS)}")
    return trackers[kind](directory, name, config)

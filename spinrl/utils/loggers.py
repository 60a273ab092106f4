"""One logging interface for every long job (``train``, ``pretrain``, ``behaviour train``).

``metrics.csv`` is always written (the run directory's record, rewritten atomically from every row so far);
``loggers`` adds any of TensorBoard, Weights & Biases and MLflow, each from its own extra. Every logger gets
the same numbers: a row's numeric values (None and text left out) at the row's step.

Where each one writes, by default inside the run directory so nothing leaves the machine unasked:

- ``tensorboard``: event files in ``OUT/tensorboard/`` (``tensorboard --logdir OUT``).
- ``wandb``: a W&B run in project ``$WANDB_PROJECT`` (default ``spinrl``) named after ``OUT``, files in
  ``OUT/wandb/``; ``WANDB_MODE=offline`` keeps it local (``wandb sync`` uploads it later).
- ``mlflow``: a run in experiment ``$MLFLOW_EXPERIMENT_NAME`` (default ``spinrl``) at
  ``$MLFLOW_TRACKING_URI``, default the file store ``OUT/mlruns`` (``mlflow ui --backend-store-uri OUT/mlruns``);
  the job's config is logged as parameters.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from spinrl.errors import ConfigError, MissingExtraError
from spinrl.utils.rundir import write_metrics_csv

LOGGERS = ("tensorboard", "wandb", "mlflow")
"""the optional loggers, each named after its extra"""
LOGGER_FILES = {"tensorboard", "wandb", "mlruns"}
"""what the optional loggers write into a run directory (spinrl's own files there)"""
_MODULES = {"tensorboard": "torch.utils.tensorboard", "wandb": "wandb", "mlflow": "mlflow"}


def parse_loggers(names: str | Iterable[str] | None) -> tuple[str, ...]:
    """``("tensorboard,wandb",)``, ``("tensorboard", "wandb")`` or ``"tensorboard,wandb"`` ->
    ``("tensorboard", "wandb")`` (order kept, duplicates dropped; "csv", always on, is accepted and dropped).

    Raises:
        ConfigError: an unknown logger.
    """
    if names is None:
        return ()
    if isinstance(names, str):
        names = [names]
    out: list[str] = []
    for item in names:
        for name in str(item).split(","):
            name = name.strip().lower()
            if not name or name == "csv" or name in out:
                continue
            if name not in LOGGERS:
                raise ConfigError(
                    f"--loggers {name!r} is unknown; choose from {', '.join(LOGGERS)} (metrics.csv is always written)"
                )
            out.append(name)
    return tuple(out)


def require(names: Iterable[str]) -> None:
    """Import each chosen logger's package now, before a job writes anything.

    Raises:
        MissingExtraError: one line naming the extra to install.
    """
    import importlib

    for name in names:
        try:  # torch's SummaryWriter needs the tensorboard package
            importlib.import_module(_MODULES[name])
        except ImportError:
            raise MissingExtraError(name, name) from None


def scalars(row: Mapping, skip: Iterable[str] = ()) -> dict[str, float]:
    """The row's numbers (bools and text left out, as are None and ``skip``)."""
    skip = set(skip)
    return {
        k: float(v) for k, v in row.items() if k not in skip and isinstance(v, (int, float)) and not isinstance(v, bool)
    }


class RunLogger:
    """``metrics.csv`` plus the chosen optional loggers of one job.

    Args:
        out: the run directory.
        names: optional loggers (``parse_loggers`` spellings).
        job: ``train``, ``pretrain`` or ``behaviour`` (a W&B job type, an MLflow tag).
        config: the job's config as plain values (W&B config, MLflow parameters).
        step_key: the row field that is the x-axis (``step``; ``env_step`` for behaviour training).
    """

    def __init__(self, out: str | os.PathLike, names: Iterable[str], job: str, config: Mapping, step_key: str = "step"):
        self.out, self.step_key, self.job = Path(out), step_key, job
        self.names = parse_loggers(names)
        require(self.names)
        self._tb: Any = None  # SummaryWriter
        self._wandb: Any = None  # wandb run
        self._mlflow: tuple[Any, str] | None = None  # (MlflowClient, run id)
        try:
            for name in self.names:
                getattr(self, f"_open_{name}")(dict(config))
        except BaseException:
            self.close()
            raise

    def _open_tensorboard(self, config: dict) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self._tb = SummaryWriter(str(self.out / "tensorboard"))

    def _open_wandb(self, config: dict) -> None:
        import wandb

        (self.out / "wandb").mkdir(parents=True, exist_ok=True)
        self._wandb = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "spinrl"),
            name=self.out.name,
            dir=str(self.out),
            config=config,
            job_type=self.job,
            reinit="create_new",
        )

    def _open_mlflow(self, config: dict) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI") or (self.out / "mlruns").resolve().as_uri()
        if uri.startswith("file:") or "://" not in uri:  # MLflow 3 refuses its file store unless this is set
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        client = MlflowClient(uri)
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "spinrl")
        exp = client.get_experiment_by_name(name)
        exp_id = exp.experiment_id if exp is not None else client.create_experiment(name)
        run = client.create_run(
            exp_id, run_name=self.out.name, tags={"spinrl.job": self.job, "spinrl.out": str(self.out)}
        )
        params = [Param(k, str(v)[:500]) for k, v in sorted(config.items()) if not isinstance(v, (dict, list, tuple))]
        for i in range(0, len(params), 100):  # MLflow's batch limit
            client.log_batch(run.info.run_id, params=params[i : i + 100])
        self._mlflow = (client, run.info.run_id)

    def write_csv(self, rows: Sequence[Mapping], columns: Sequence[str] | None = None) -> None:
        """Rewrite ``metrics.csv`` only (a resume dropping rows written after its checkpoint)."""
        write_metrics_csv(self.out / "metrics.csv", rows, columns)

    def log(self, rows: Sequence[Mapping], columns: Sequence[str] | None = None) -> None:
        """Rewrite ``metrics.csv`` from ``rows`` and send the newest row to the optional loggers."""
        self.write_csv(rows, columns)
        if not rows or not self.names:
            return
        row = rows[-1]
        step = int(row[self.step_key])
        values = {k: v for k, v in scalars(row, skip=(self.step_key,)).items() if math.isfinite(v)}
        if self._tb is not None:
            for k, v in values.items():
                self._tb.add_scalar(k, v, step)
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log(values, step=step)
        if self._mlflow is not None:
            from mlflow.entities import Metric

            client, run_id = self._mlflow
            ms = int(time.time() * 1000)
            client.log_batch(run_id, metrics=[Metric(k, v, ms, step) for k, v in values.items()])

    def close(self) -> None:
        """Flush and close the optional loggers (idempotent)."""
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None
        if self._mlflow is not None:
            client, run_id = self._mlflow
            self._mlflow = None
            client.set_terminated(run_id)

    def __enter__(self) -> "RunLogger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

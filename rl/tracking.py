"""Where metrics go: a JSONL file in the run directory and Weights & Biases (offline without a key)."""
from __future__ import annotations

import json
import os
from pathlib import Path

from rl.config import Config


def wandb_mode(configured: str) -> str:
    if configured != "auto":
        return configured
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


class Tracker:
    def __init__(self, cfg: Config, run_dir: Path, metadata: dict, resumed=None):
        """resumed: the checkpoint's DriverState (launch/checkpoint.py) when the run continues:
        rows logged after its step (by the run that was interrupted) are dropped from the JSONL
        log, and the same W&B run continues."""
        self.path, self.tables_dir = run_dir / "metrics.jsonl", run_dir / "tables"
        if resumed is not None and self.path.exists():
            kept = [line for line in self.path.read_text().splitlines(keepends=True) if json.loads(line)["step"] <= resumed.step]
            self.path.write_text("".join(kept))
        self._file = self.path.open("a")
        self._wandb = None
        mode = wandb_mode(cfg.wandb.mode)
        if mode != "disabled":
            import wandb

            run_id = resumed.wandb_id if resumed is not None else None
            self._wandb = wandb.init(
                project=cfg.wandb.project, entity=cfg.wandb.entity or None, mode=mode, dir=str(run_dir),
                name=run_dir.name, config={**cfg.to_dict(), "metadata": metadata},
                id=run_id, resume="allow" if run_id else None,
                settings=wandb.Settings(quiet=True),   # the run's own table is the terminal's summary
            )

    @property
    def run_id(self) -> str | None:
        """The W&B run's id (None without W&B): a resumed run continues it."""
        return None if self._wandb is None else self._wandb.id

    def log(self, step: int, metrics: dict, tables: dict | None = None, histograms: dict | None = None) -> None:
        """All metrics to the JSONL file; the numeric ones to W&B (checksums are strings). Tables
        (name -> (columns, rows), rl/report.py:episode_tables) go to <run>/tables/step-N.json and
        to W&B as tables; histograms (name -> values) to W&B as histograms."""
        self._file.write(json.dumps({"step": step, **metrics}) + "\n")
        self._file.flush()
        if tables:
            self.tables_dir.mkdir(exist_ok=True)
            (self.tables_dir / f"step-{step:06d}.json").write_text(
                json.dumps({name: {"columns": c, "rows": r} for name, (c, r) in tables.items()}))
        if self._wandb is not None:
            import wandb

            row = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
            row.update({name: wandb.Table(columns=c, data=r) for name, (c, r) in (tables or {}).items()})
            row.update({name: wandb.Histogram(v) for name, v in (histograms or {}).items() if v})
            self._wandb.log(row, step=step)

    def summary(self, values: dict) -> None:
        if self._wandb is not None:
            self._wandb.summary.update(values)

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()
        if self._wandb is not None:
            self._wandb.finish()

"""ORM tables of the dashboard's database (SQLAlchemy 2, typed).

Kept apart from `db.py` so the schema reads at a glance. Timestamps are float epoch seconds (like
`time.time()` and the metrics' wall_time): no time-zone pitfalls across SQLite and PostgreSQL, and
durations are plain subtraction.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Double, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAME_MAX = 200  # metric / variant / dataset name length (VARCHAR on PostgreSQL)

RUN_STATUSES = ("queued", "running", "done", "cancelled", "diverged", "failed", "interrupted")
ACTIVE_STATUSES = ("queued", "running")


class Base(DeclarativeBase):
    """Declarative base; `Base.metadata.create_all` builds the whole schema once at start-up."""


class DatasetRow(Base):
    """An uploaded dataset, stored as JSON rows so a run can be reproduced without the file."""

    __tablename__ = "datasets"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(NAME_MAX))
    content_hash: Mapped[str] = mapped_column(String(128), unique=True)
    detected_format: Mapped[str] = mapped_column(String(NAME_MAX), default="")
    fields: Mapped[list[Any]] = mapped_column(JSON, default=list)
    n_rows: Mapped[int] = mapped_column(Integer, default=0)
    has_references: Mapped[bool] = mapped_column(default=False)
    rows: Mapped[list[Any]] = mapped_column(JSON, default=list)
    created_at: Mapped[float] = mapped_column(Double)


class ExperimentRow(Base):
    """One launch from the dashboard: a group of runs (variants x seeds) sharing a config."""

    __tablename__ = "experiments"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(NAME_MAX))
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[float] = mapped_column(Double)


class RunRow(Base):
    """One training run (variant, seed); status and timings let the UI and recovery see its state."""

    __tablename__ = "runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    experiment_id: Mapped[int] = mapped_column(
        ForeignKey("experiments.id", ondelete="CASCADE"), index=True
    )
    variant: Mapped[str] = mapped_column(String(NAME_MAX))
    seed: Mapped[int] = mapped_column(Integer)
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(32), default="queued", index=True)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    step: Mapped[int] = mapped_column(Integer, default=0)
    total_steps: Mapped[int] = mapped_column(Integer, default=0)
    device: Mapped[str | None] = mapped_column(String(64), default=None)
    created_at: Mapped[float] = mapped_column(Double)
    started_at: Mapped[float | None] = mapped_column(Double, default=None)
    finished_at: Mapped[float | None] = mapped_column(Double, default=None)
    heartbeat_at: Mapped[float | None] = mapped_column(Double, default=None)
    # "host:pid" of the process that queued the run, so recovery only touches runs of dead processes.
    owner: Mapped[str | None] = mapped_column(String(NAME_MAX), default=None)


class MetricRow(Base):
    """Long metrics table. The primary key (run_id, name, step) is the uniqueness that makes inserts
    idempotent and the index behind "run R, metric M, step > S"; on SQLite the table is WITHOUT ROWID,
    so rows are stored clustered in exactly that order. NULL value means NaN (SQLite turns NaN into
    NULL anyway, so the mapping is made explicit and identical on every backend)."""

    __tablename__ = "metrics"
    run_id: Mapped[int] = mapped_column(
        ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(NAME_MAX), primary_key=True)
    step: Mapped[int] = mapped_column(Integer, primary_key=True)
    value: Mapped[float | None] = mapped_column(Double, nullable=True)
    wall_time: Mapped[float] = mapped_column(Double)
    __table_args__ = (
        # "max step of run R" without scanning every metric name of the run.
        Index("ix_metrics_run_step", "run_id", "step"),
        {"sqlite_with_rowid": False},
    )


class SampleRow(Base):
    """A generated text shown in the UI (held-out prompt, student output, optional reference)."""

    __tablename__ = "samples"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(Integer)
    idx: Mapped[int] = mapped_column(Integer, default=0)
    prompt: Mapped[str] = mapped_column(Text, default="")
    text: Mapped[str] = mapped_column(Text, default="")
    reference: Mapped[str | None] = mapped_column(Text, default=None)
    # Re-sending the same samples (a retried write) is a no-op.
    __table_args__ = (UniqueConstraint("run_id", "step", "idx", name="uq_samples_run_step_idx"),)


class EventRow(Base):
    """A timestamped note in a run's life (started, diverged, checkpoint saved, error text)."""

    __tablename__ = "events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    time: Mapped[float] = mapped_column(Double)
    kind: Mapped[str] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(Text, default="")

"""The dashboard's storage: one SQLAlchemy engine per `Database`, SQLite (WAL) by default, any URL allowed.

Why it looks like this:
- SQLite in WAL mode lets the UI read while training threads write; every write transaction starts
  with BEGIN IMMEDIATE, so a writer waits on the busy timeout instead of failing with "database is
  locked" when it would have had to upgrade a read lock (the classic SQLITE_BUSY trap).
- Metrics are a long table keyed (run_id, name, step): inserts are idempotent (ON CONFLICT DO
  NOTHING), and "rows of run R after step S" is an index range scan.
- NaN is stored as NULL and read back as float('nan'); +-inf are stored as they are. (SQLite would
  silently turn NaN into NULL anyway; doing it explicitly makes every backend behave the same.)
- The URL may hold a password: only `safe_url` (password masked) ever appears in reprs, logs, errors.
- db knows nothing of the data module: datasets go in and come out as plain JSON rows + metadata.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, delete, event, func, insert, select, update
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.pool import StaticPool

from minillm_dash import paths
from minillm_dash.db_schema import (
    ACTIVE_STATUSES,
    NAME_MAX,
    RUN_STATUSES,
    Base,
    DatasetRow,
    EventRow,
    ExperimentRow,
    MetricRow,
    RunRow,
    SampleRow,
)
from minillm_dash.errors import UserInputError

log = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_S = 30.0
MetricTuple = tuple[int, int, str, float, float]  # (run_id, step, name, value, wall_time)

# Fields a caller may change on a run; anything else is a programming error (TypeError).
RUN_UPDATABLE = frozenset(
    {"status", "error", "step", "total_steps", "device", "started_at", "finished_at",
     "heartbeat_at", "config", "owner"}
)

__all__ = [
    "Database",
    "DatabaseOpenError",
    "MetricTuple",
    "MetricWriter",
    "RUN_STATUSES",
    "encode_value",
    "decode_value",
]


class DatabaseOpenError(UserInputError):
    """The database URL could not be parsed, its driver is missing, or the server refused us.
    The message names the URL with its password masked."""


def process_owner() -> str:
    """This process as a run owner: "host:pid"."""
    return f"{socket.gethostname()}:{os.getpid()}"


def owner_is_alive(owner: str | None) -> bool:
    """False for runs of a dead process on this host (or with no owner); True for other hosts."""
    if not owner or ":" not in owner:
        return False
    host, _, pid_text = owner.rpartition(":")
    if host != socket.gethostname():
        return True
    if not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    return True


def encode_value(value: float | None) -> float | None:
    """Metric value as stored: NaN -> NULL (None); everything else, inf included, a float."""
    if value is None:
        return None
    v = float(value)
    return None if math.isnan(v) else v


def decode_value(value: float | None) -> float:
    """Stored metric value back to a float: NULL -> NaN."""
    return math.nan if value is None else float(value)


def _unique_ints(ids: Iterable[int]) -> list[int]:
    """Run ids as ints, duplicates removed, order kept (callers pass lists, sets, tuples...)."""
    return list(dict.fromkeys(int(i) for i in ids))


def _parse_url(url: str | URL | None) -> URL:
    """The URL as an object; a parse failure must not echo the string (it may hold a password)."""
    if url is None:
        url = paths.default_db_url()
    try:
        return make_url(url)
    except ArgumentError:
        raise DatabaseOpenError(
            "could not parse the database URL (not shown: it may hold a password); expected e.g. "
            "sqlite:///path/to/file.sqlite or postgresql+psycopg2://user:password@host:5432/dbname"
        ) from None


def _is_sqlite_memory(url: URL) -> bool:
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


class Database:
    """All persistence of the dashboard behind one object (one engine, thread-safe).

    Every method opens a short-lived connection from the pool, so any thread may call any method.
    """

    def __init__(self, url: str | URL | None = None, *, echo: bool = False) -> None:
        self._url = _parse_url(url)
        self.safe_url: str = self._url.render_as_string(hide_password=True)
        self._closed = False
        self.engine: Engine = self._create_engine(echo)
        # SQLite has one writer at a time anyway. Queuing our own threads on a lock hands the
        # write lock over at once, where SQLite's busy handler polls with growing sleeps and can
        # starve one writer for seconds. Other processes still wait on busy_timeout.
        self._write_lock: threading.RLock | contextlib.nullcontext = (
            threading.RLock() if self.is_sqlite else contextlib.nullcontext()
        )
        # An in-memory SQLite database is one shared connection: its readers must queue too.
        self._read_lock = self._write_lock if _is_sqlite_memory(self._url) else contextlib.nullcontext()
        try:
            with self._writing() as conn:
                Base.metadata.create_all(conn)
        except SQLAlchemyError as exc:
            self.engine.dispose()
            raise DatabaseOpenError(f"cannot open the database {self.safe_url}: {_short(exc)}") from exc

    # ------------------------------------------------------------------ engine and transactions
    @property
    def dialect(self) -> str:
        """Backend name: 'sqlite', 'postgresql', ..."""
        return self.engine.dialect.name

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    def _create_engine(self, echo: bool) -> Engine:
        """One engine per Database; SQLite gets WAL, busy timeout, our own BEGIN handling."""
        url = self._url
        try:
            if url.get_backend_name() != "sqlite":
                return create_engine(url, echo=echo, pool_pre_ping=True, hide_parameters=True)
            if _is_sqlite_memory(url):
                engine = create_engine(
                    url, echo=echo, poolclass=StaticPool, hide_parameters=True,
                    connect_args={"check_same_thread": False},
                )
            else:
                Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
                engine = create_engine(
                    url, echo=echo, hide_parameters=True, pool_size=10, max_overflow=40,
                    pool_timeout=120,
                    connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S},
                )
        except (NoSuchModuleError, ModuleNotFoundError, ArgumentError) as exc:
            raise DatabaseOpenError(
                f"cannot open the database {self.safe_url}: driver or option problem: {exc}"
            ) from None
        _install_sqlite_events(engine, wal=not _is_sqlite_memory(url))
        return engine

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")

    @contextmanager
    def _writing(self) -> Iterator[Connection]:
        """A write transaction (BEGIN IMMEDIATE on SQLite: take the write lock first, wait politely)."""
        self._check_open()
        with self._write_lock, self.engine.connect() as conn:
            if self.is_sqlite:
                conn.execution_options(sqlite_begin="IMMEDIATE")
            with conn.begin():
                yield conn

    @contextmanager
    def _reading(self) -> Iterator[Connection]:
        """A read-only snapshot: several queries inside see the same state."""
        self._check_open()
        with self._read_lock, self.engine.connect() as conn:
            yield conn

    def _insert_ignore(self, model: type[Base], conflict_cols: Sequence[str]) -> Any | None:
        """INSERT ... ON CONFLICT DO NOTHING for SQLite and PostgreSQL; None for other backends."""
        if self.dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        elif self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        else:
            return None
        return dialect_insert(model).on_conflict_do_nothing(index_elements=list(conflict_cols))

    def _insert_rows_ignoring_duplicates(
        self, conn: Connection, model: type[Base], conflict_cols: Sequence[str], rows: list[dict]
    ) -> None:
        """executemany of an idempotent insert; row-by-row savepoints on backends without ON CONFLICT."""
        if not rows:
            return
        stmt = self._insert_ignore(model, conflict_cols)
        if stmt is not None and not self.is_sqlite:
            # SQLAlchemy batches an executemany into multi-row VALUES pages ("insertmanyvalues")
            # only with RETURNING when ON CONFLICT is present; plain psycopg2 executemany is one
            # round trip per row (~100 us each, 10-20x slower).
            pk = model.__table__.primary_key.columns.values()[0]
            conn.execute(stmt.returning(pk), rows).all()
            return
        if stmt is not None:
            conn.execute(stmt, rows)  # sqlite3's executemany is a C loop: already fast
            return
        for row in rows:
            try:
                with conn.begin_nested():
                    conn.execute(insert(model), row)
            except IntegrityError:
                log.debug("duplicate %s row ignored: %s", model.__tablename__,
                          {c: row.get(c) for c in conflict_cols})

    def close(self) -> None:
        """Release every pooled connection; later calls raise RuntimeError instead of reconnecting."""
        self._closed = True
        self.engine.dispose()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Database({self.safe_url!r})"

    # ------------------------------------------------------------------ datasets
    def add_dataset(
        self,
        dataset: Any = None,
        /,
        *,
        name: str | None = None,
        content_hash: str | None = None,
        detected_format: str = "",
        fields: Sequence[str] = (),
        rows: list[dict[str, Any]] | None = None,
        has_references: bool | None = None,
    ) -> int:
        """Store a dataset's rows; the same content (hash) uploaded twice returns the first id.

        Pass either a dataset object (duck-typed `data.PromptDataset`: name, content_hash,
        detected_format, fields, records of dataclasses) or the plain keyword fields. db does not
        import the data module; records are stored as `dataclasses.asdict` rows, which is the
        `data.to_rows` layout that `data.from_rows` reads back.
        """
        if dataset is not None:
            name, content_hash = dataset.name, dataset.content_hash
            detected_format, fields = dataset.detected_format, tuple(dataset.fields)
            rows = [dataclasses.asdict(r) for r in dataset.records]
            has_references = getattr(dataset, "has_references", has_references)
        if name is None or not content_hash or rows is None:
            raise TypeError("add_dataset needs a dataset object or name=, content_hash= and rows=")
        if has_references is None:
            has_references = any(isinstance(r, Mapping) and r.get("reference") for r in rows)
        values = {
            "name": str(name)[:NAME_MAX], "content_hash": content_hash,
            "detected_format": str(detected_format)[:NAME_MAX], "fields": list(fields),
            "n_rows": len(rows), "has_references": bool(has_references), "rows": list(rows),
            "created_at": time.time(),
        }
        with self._writing() as conn:
            self._insert_rows_ignoring_duplicates(conn, DatasetRow, ["content_hash"], [values])
            return conn.execute(
                select(DatasetRow.id).where(DatasetRow.content_hash == content_hash)
            ).scalar_one()

    def get_dataset(self, dataset_id: int) -> dict[str, Any] | None:
        """{id, name, content_hash, detected_format, fields, n_rows, has_references, rows, created_at}."""
        with self._reading() as conn:
            row = conn.execute(
                select(DatasetRow.__table__).where(DatasetRow.id == int(dataset_id))
            ).first()
        return dict(row._mapping) if row else None

    def find_dataset(self, content_hash: str) -> int | None:
        """Id of the dataset with this content, if already stored (lets callers skip re-parsing)."""
        with self._reading() as conn:
            return conn.execute(
                select(DatasetRow.id).where(DatasetRow.content_hash == content_hash)
            ).scalar_one_or_none()

    def list_datasets(self) -> list[dict[str, Any]]:
        """Every dataset's metadata (no rows: they can be large), oldest first."""
        cols = [c for c in DatasetRow.__table__.c if c.name != "rows"]
        with self._reading() as conn:
            result = conn.execute(select(*cols).order_by(DatasetRow.id))
            return [dict(r._mapping) for r in result]

    def delete_dataset(self, dataset_id: int) -> bool:
        """Remove a dataset; runs keep their own copy of the settings in their config."""
        with self._writing() as conn:
            res = conn.execute(delete(DatasetRow).where(DatasetRow.id == int(dataset_id)))
            return res.rowcount > 0

    # ------------------------------------------------------------------ experiments and runs
    def create_experiment(self, name: str, config: dict[str, Any]) -> int:
        """New experiment (a launch); returns its id."""
        with self._writing() as conn:
            res = conn.execute(
                insert(ExperimentRow).values(
                    name=str(name)[:NAME_MAX], config=dict(config), created_at=time.time()
                )
            )
            return int(res.inserted_primary_key[0])

    def get_experiment(self, experiment_id: int) -> dict[str, Any] | None:
        with self._reading() as conn:
            row = conn.execute(
                select(ExperimentRow.__table__).where(ExperimentRow.id == int(experiment_id))
            ).first()
        return dict(row._mapping) if row else None

    def list_experiments(self) -> list[dict[str, Any]]:
        """Every experiment, oldest first, with `n_runs`."""
        n_runs = (
            select(func.count(RunRow.id)).where(RunRow.experiment_id == ExperimentRow.id)
            .scalar_subquery().label("n_runs")
        )
        with self._reading() as conn:
            result = conn.execute(select(ExperimentRow.__table__, n_runs).order_by(ExperimentRow.id))
            return [dict(r._mapping) for r in result]

    def create_run(
        self,
        experiment_id: int,
        variant: str,
        seed: int,
        config: dict[str, Any],
        total_steps: int = 0,
        status: str = "queued",
    ) -> int:
        """New run in an experiment, queued by default and owned by this process; returns its id."""
        _check_status(status)
        with self._writing() as conn:
            res = conn.execute(
                insert(RunRow).values(
                    experiment_id=int(experiment_id), variant=str(variant)[:NAME_MAX],
                    seed=int(seed), config=dict(config), status=status, step=0,
                    total_steps=int(total_steps), created_at=time.time(), owner=process_owner(),
                )
            )
            return int(res.inserted_primary_key[0])

    def update_run(self, run_id: int, **fields: Any) -> bool:
        """Change a run's status/error/step/timings/device/config; always refreshes heartbeat_at.

        `update_run(rid)` alone is a heartbeat. Returns False if the run no longer exists (deleted
        while running): the runner carries on instead of dying.
        """
        unknown = set(fields) - RUN_UPDATABLE
        if unknown:
            raise TypeError(f"update_run: unknown field(s) {sorted(unknown)}; allowed {sorted(RUN_UPDATABLE)}")
        if "status" in fields:
            _check_status(fields["status"])
        fields.setdefault("heartbeat_at", time.time())
        with self._writing() as conn:
            res = conn.execute(update(RunRow).where(RunRow.id == int(run_id)).values(**fields))
            return res.rowcount > 0

    def mark_interrupted(self) -> int:
        """At start-up: queued/running runs whose owning process is gone are marked `interrupted`.

        Runs owned by a live process (a dashboard and a command-line experiment sharing one
        database) are left alone; so are runs owned by another host, whose liveness we cannot see.
        Returns how many runs were marked.
        """
        with self._reading() as conn:
            active = conn.execute(
                select(RunRow.id, RunRow.owner).where(RunRow.status.in_(ACTIVE_STATUSES))
            ).all()
        dead = [run_id for run_id, owner in active if not owner_is_alive(owner)]
        if not dead:
            return 0
        with self._writing() as conn:
            res = conn.execute(
                update(RunRow)
                .where(RunRow.id.in_(dead), RunRow.status.in_(ACTIVE_STATUSES))
                .values(
                    status="interrupted", finished_at=time.time(),
                    error="interrupted: the process running it stopped before this run finished",
                )
            )
            return int(res.rowcount)

    def get_run(self, run_id: int) -> dict[str, Any] | None:
        with self._reading() as conn:
            row = conn.execute(select(RunRow.__table__).where(RunRow.id == int(run_id))).first()
        return dict(row._mapping) if row else None

    def list_runs(self, experiment_id: int | None = None) -> list[dict[str, Any]]:
        """Runs (all, or one experiment's), oldest first."""
        stmt = select(RunRow.__table__).order_by(RunRow.id)
        if experiment_id is not None:
            stmt = stmt.where(RunRow.experiment_id == int(experiment_id))
        with self._reading() as conn:
            return [dict(r._mapping) for r in conn.execute(stmt)]

    def existing_run_ids(self, run_ids: Iterable[int]) -> set[int]:
        """Which of these runs still exist (the metric writer drops rows of deleted runs)."""
        ids = _unique_ints(run_ids)
        if not ids:
            return set()
        with self._reading() as conn:
            return set(conn.execute(select(RunRow.id).where(RunRow.id.in_(ids))).scalars())

    def delete_run(self, run_id: int) -> bool:
        """Remove a run with its metrics, samples and events (explicitly: SQLite FKs may be off)."""
        with self._writing() as conn:
            return self._delete_runs(conn, [int(run_id)]) > 0

    def delete_experiment(self, experiment_id: int) -> bool:
        """Remove an experiment and everything of its runs."""
        eid = int(experiment_id)
        with self._writing() as conn:
            run_ids = list(conn.execute(select(RunRow.id).where(RunRow.experiment_id == eid)).scalars())
            self._delete_runs(conn, run_ids)
            res = conn.execute(delete(ExperimentRow).where(ExperimentRow.id == eid))
            return res.rowcount > 0

    @staticmethod
    def _delete_runs(conn: Connection, run_ids: list[int]) -> int:
        if not run_ids:
            return 0
        for child in (MetricRow, SampleRow, EventRow):
            conn.execute(delete(child).where(child.run_id.in_(run_ids)))
        return int(conn.execute(delete(RunRow).where(RunRow.id.in_(run_ids))).rowcount)

    # ------------------------------------------------------------------ metrics
    def insert_metrics(self, rows: Iterable[Sequence[Any]]) -> int:
        """Insert (run_id, step, name, value, wall_time) rows in one transaction; existing
        (run_id, name, step) rows are left untouched, so a retried batch is harmless.
        Returns the number of rows sent (duplicates included)."""
        payload = [
            {"run_id": int(r), "step": int(s), "name": str(n), "value": encode_value(v),
             "wall_time": float(w)}
            for r, s, n, v, w in rows
        ]
        if not payload:
            return 0
        if not all(math.isfinite(p["wall_time"]) for p in payload):
            raise ValueError("insert_metrics: wall_time must be a finite number of seconds")
        with self._writing() as conn:
            self._insert_rows_ignoring_duplicates(conn, MetricRow, ["run_id", "name", "step"], payload)
        return len(payload)

    def max_steps(self, run_ids: Iterable[int]) -> dict[int, int]:
        """{run_id: highest step with any metric}; runs without metrics are absent. Cheap: one
        index probe per run, meant for the UI's "anything new?" poll."""
        ids = _unique_ints(run_ids)
        out: dict[int, int] = {}
        with self._reading() as conn:
            for rid in ids:
                top = conn.execute(
                    select(func.max(MetricRow.step)).where(MetricRow.run_id == rid)
                ).scalar_one()
                if top is not None:
                    out[rid] = int(top)
        return out

    def metric_rows(
        self,
        run_ids: Iterable[int],
        names: Iterable[str] | None = None,
        after_step: Mapping[int, int] | None = None,
    ) -> list[MetricTuple]:
        """(run_id, step, name, value, wall_time) ordered by run, name, step.

        `names` limits the metrics; `after_step` {run_id: step} keeps only rows with a greater step
        for those runs (runs not in it: all rows). Values are floats, NaN included.
        """
        ids = _unique_ints(run_ids)
        name_list = None if names is None else list(dict.fromkeys(str(n) for n in names))
        after = {int(k): int(v) for k, v in (after_step or {}).items()}
        out: list[MetricTuple] = []
        if not ids or name_list == []:
            return out
        cols = (MetricRow.run_id, MetricRow.step, MetricRow.name, MetricRow.value, MetricRow.wall_time)
        with self._reading() as conn:
            for rid in sorted(ids):
                stmt = select(*cols).where(MetricRow.run_id == rid)
                if name_list is not None:
                    stmt = stmt.where(MetricRow.name.in_(name_list))
                if rid in after:
                    stmt = stmt.where(MetricRow.step > after[rid])
                stmt = stmt.order_by(MetricRow.name, MetricRow.step)
                out.extend((r, s, n, decode_value(v), w) for r, s, n, v, w in conn.execute(stmt))
        return out

    def metric_names(self, run_ids: Iterable[int]) -> list[str]:
        """Sorted distinct metric names logged by these runs."""
        ids = _unique_ints(run_ids)
        if not ids:
            return []
        with self._reading() as conn:
            stmt = (select(MetricRow.name).where(MetricRow.run_id.in_(ids)).distinct()
                    .order_by(MetricRow.name))
            return list(conn.execute(stmt).scalars())

    def count_metrics(self, run_ids: Iterable[int]) -> int:
        """Number of stored metric rows of these runs (exports and tests check completeness)."""
        ids = _unique_ints(run_ids)
        if not ids:
            return 0
        with self._reading() as conn:
            return int(conn.execute(
                select(func.count()).select_from(MetricRow).where(MetricRow.run_id.in_(ids))
            ).scalar_one())

    # ------------------------------------------------------------------ samples and events
    def add_samples(self, run_id: int, step: int, samples: Sequence[Mapping[str, Any]]) -> int:
        """Store generated texts [{prompt, text, reference?, idx?}]; idx defaults to the position.
        Re-sending the same (run, step, idx) is ignored. Returns the number sent."""
        rows = [
            {"run_id": int(run_id), "step": int(step), "idx": int(s.get("idx", i)),
             "prompt": str(s.get("prompt") or ""), "text": str(s.get("text") or ""),
             "reference": None if s.get("reference") is None else str(s["reference"])}
            for i, s in enumerate(samples)
        ]
        if rows:
            with self._writing() as conn:
                self._insert_rows_ignoring_duplicates(conn, SampleRow, ["run_id", "step", "idx"], rows)
        return len(rows)

    def samples(self, run_id: int, step: int | None = None) -> list[dict[str, Any]]:
        """A run's samples ({run_id, step, idx, prompt, text, reference}) by step then idx."""
        t = SampleRow
        stmt = (select(t.run_id, t.step, t.idx, t.prompt, t.text, t.reference)
                .where(t.run_id == int(run_id)).order_by(t.step, t.idx))
        if step is not None:
            stmt = stmt.where(t.step == int(step))
        with self._reading() as conn:
            return [dict(r._mapping) for r in conn.execute(stmt)]

    def add_event(self, run_id: int, kind: str, message: str, time_: float | None = None) -> int:
        """Append a note to a run's timeline; returns the event id."""
        with self._writing() as conn:
            res = conn.execute(insert(EventRow).values(
                run_id=int(run_id), kind=str(kind)[:64], message=str(message),
                time=time.time() if time_ is None else float(time_),
            ))
            return int(res.inserted_primary_key[0])

    def events(self, run_id: int) -> list[dict[str, Any]]:
        """A run's events ({id, run_id, time, kind, message}) in order."""
        stmt = select(EventRow.__table__).where(EventRow.run_id == int(run_id)).order_by(
            EventRow.time, EventRow.id)
        with self._reading() as conn:
            return [dict(r._mapping) for r in conn.execute(stmt)]


def _check_status(status: str) -> None:
    if status not in RUN_STATUSES:
        raise ValueError(f"unknown run status {status!r}; expected one of {RUN_STATUSES}")


def _short(exc: BaseException) -> str:
    """The driver's own message (without SQLAlchemy's SQL/parameter dump)."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip()
    return text.splitlines()[0] if text else type(orig).__name__


def _install_sqlite_events(engine: Engine, *, wal: bool) -> None:
    """Per-connection pragmas and our own BEGIN (pysqlite's implicit BEGIN is switched off), so
    write transactions can say BEGIN IMMEDIATE."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (see _on_begin)
        cur = dbapi_conn.cursor()
        try:
            cur.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
            if wal:
                cur.execute("PRAGMA journal_mode = WAL")
            cur.execute("PRAGMA synchronous = NORMAL")
            cur.execute("PRAGMA foreign_keys = ON")
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql("BEGIN IMMEDIATE" if mode == "IMMEDIATE" else "BEGIN")


from minillm_dash.metric_writer import MetricWriter  # noqa: E402  (re-export; contract lists it under db)

"""Background execution of experiments: a bounded pool of run threads sharing one frozen teacher.

`launch` does everything that can refuse an experiment (config, dataset, model loading and the
vocabulary check) in the caller's thread, so a bad experiment is refused before any run thread
starts and nothing is stored. Accepted runs are queued in the database and picked up by at most
`max_concurrent` worker threads; each writes its metrics through its own non-blocking writer.
"""

from __future__ import annotations

import gc
import logging
import os
import queue
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Callable

import torch

from minillm_dash import data
from minillm_dash.config import ExperimentConfig, RunConfig
from minillm_dash.db import Database
from minillm_dash.errors import ConfigError
from minillm_dash.metric_writer import MetricWriter
from minillm_dash.modeling import (ModelSource, check_compatible, default_dtype, load_student, load_teacher,
                                  resolve_device, save_student)
from minillm_dash.trainer import RunOutcome, RunTrainer, StepReport, check_dataset_fits

log = logging.getLogger(__name__)
Progress = Callable[[str], None]


def configure_cpu_threads(max_concurrent: int) -> int:
    """Split the CPU cores between concurrent runs: torch's intra-op pool is process-wide, and
    several run threads each asking for every core oversubscribe the machine many times over."""
    threads = max(1, (os.cpu_count() or 1) // max(1, max_concurrent))
    torch.set_num_threads(threads)
    return threads


class TeacherCache:
    """One read-only teacher per (source, device): every run thread shares it, none trains it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._models: dict[tuple[str, str, bool], tuple[torch.nn.Module, object]] = {}

    def loaded(self) -> list[tuple[str, object]]:
        """(source, tokenizer) of every teacher loaded so far, e.g. to preview chat templates."""
        with self._lock:
            return [(source, tokenizer) for (source, _, _), (_, tokenizer) in self._models.items()]

    def get(self, source: str, device: torch.device, progress: Progress | None = None, *,
            trust_remote_code: bool = False):
        key = (source, str(device), trust_remote_code)
        with self._lock:
            if key not in self._models:
                if progress:
                    progress(f"loading teacher '{source}' on {device}")
                model, tokenizer = load_teacher(ModelSource.parse(source, trust_remote_code=trust_remote_code),
                                                device, default_dtype(device))
                self._models[key] = (model, tokenizer)
            return self._models[key]


@dataclass
class _QueuedRun:
    run_id: int
    config: RunConfig
    dataset: data.PromptDataset


def resolve_dataset(db: Database, dataset_id: int | None) -> data.PromptDataset:
    """The stored dataset with that id, or the built-in prompt set for None."""
    if dataset_id is None:
        return data.builtin_dataset()
    stored = db.get_dataset(dataset_id)
    if stored is None:
        raise ConfigError(f"no stored dataset with id {dataset_id}", field="dataset")
    return data.from_rows(stored["rows"], name=stored["name"], detected_format=stored["detected_format"],
                          fields=tuple(stored["fields"]), content_hash=stored["content_hash"])


class Runner:
    """Queue + worker threads; the UI and the command line drive experiments only through this."""

    def __init__(self, db: Database, *, max_concurrent: int = 2, teachers: TeacherCache | None = None):
        if max_concurrent < 1:
            raise ConfigError(f"must be ≥ 1, got {max_concurrent}", field="max_concurrent")
        self.db = db
        self.max_concurrent = max_concurrent
        self.teachers = teachers or TeacherCache()
        self._queue: queue.Queue[_QueuedRun | None] = queue.Queue()
        self._stop_flags: dict[int, threading.Event] = {}
        self._active: set[int] = set()
        self._lock = threading.Lock()
        self._workers: list[threading.Thread] = []
        self._closed = False

    # ------------------------------------------------------------- public
    def launch(self, exp: ExperimentConfig, progress: Progress | None = None) -> int:
        """Validate, load and check models, then queue variants × seeds runs; returns the experiment id."""
        if self._closed:
            raise RuntimeError("the runner has been shut down")
        exp.validate()
        dataset = resolve_dataset(self.db, exp.dataset_id)
        runs = exp.runs()
        for cfg in runs:
            check_dataset_fits(cfg, dataset)
        self.check_models(exp.teacher, exp.student, exp.train.device, progress,
                          trust_remote_code=exp.trust_remote_code)
        experiment_id = self.db.create_experiment(exp.name, exp.to_dict())
        for cfg in runs:
            run_id = self.db.create_run(experiment_id, cfg.variant.name, cfg.seed, cfg.to_dict(), cfg.train.steps)
            with self._lock:
                self._stop_flags[run_id] = threading.Event()
            self._queue.put(_QueuedRun(run_id, cfg, dataset))
        self._ensure_workers()
        return experiment_id

    def check_models(self, teacher: str, student: str, device_name: str | None = None,
                     progress: Progress | None = None, *, trust_remote_code: bool = False) -> str:
        """Load the teacher (cached) and the student once and check they share a vocabulary."""
        device = resolve_device(device_name)
        teacher_model, tokenizer = self.teachers.get(teacher, device, progress, trust_remote_code=trust_remote_code)
        if progress:
            progress(f"building student '{student}'")
        student_model, student_tokenizer = load_student(
            ModelSource.parse(student, trust_remote_code=trust_remote_code), teacher_model, tokenizer, device,
            torch.float32)
        check_compatible(teacher_model, tokenizer, student_model, student_tokenizer)
        n_teacher = sum(p.numel() for p in teacher_model.parameters())
        n_student = sum(p.numel() for p in student_model.parameters())
        vocab = teacher_model.get_output_embeddings().weight.shape[0]
        del student_model
        return (f"compatible: shared vocabulary of {vocab} tokens; teacher {n_teacher / 1e6:.1f}M parameters, "
                f"student {n_student / 1e6:.1f}M, on {device}")

    def cancel(self, run_id: int) -> bool:
        """Ask a queued or running run to stop; a running one stops before its next step."""
        with self._lock:
            flag = self._stop_flags.get(run_id)
        if flag is None:
            return False
        flag.set()
        return True

    def is_busy(self) -> bool:
        with self._lock:
            return bool(self._active) or not self._queue.empty()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every queued and running run has finished; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.is_busy():
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def shutdown(self, cancel: bool = True, timeout: float = 30.0) -> None:
        """Stop the workers (cancelling runs if asked); the UI's close() does not do this for us."""
        self._closed = True
        if cancel:
            with self._lock:
                for flag in self._stop_flags.values():
                    flag.set()
        for _ in self._workers:
            self._queue.put(None)
        for worker in self._workers:
            worker.join(timeout)

    # ------------------------------------------------------------ workers
    def _ensure_workers(self) -> None:
        while len(self._workers) < self.max_concurrent:
            worker = threading.Thread(target=self._work, name=f"run-worker-{len(self._workers)}", daemon=True)
            self._workers.append(worker)
            worker.start()

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            with self._lock:
                self._active.add(item.run_id)
            try:
                self._execute(item)
            except Exception:  # e.g. the database went away while recording the outcome
                log.exception("worker could not record the outcome of run %s; continuing with the queue",
                              item.run_id)
            finally:
                with self._lock:
                    self._active.discard(item.run_id)
                    self._stop_flags.pop(item.run_id, None)

    def _execute(self, item: _QueuedRun) -> None:
        stop = self._stop_flags[item.run_id]
        if stop.is_set():
            self.db.update_run(item.run_id, status="cancelled", error="cancelled while queued", finished_at=time.time())
            return
        writer = MetricWriter(self.db)
        try:
            outcome = self._train(item, writer, stop)
            writer.close()
            self.db.update_run(item.run_id, status=outcome.status, step=outcome.steps_done,
                               error=outcome.message if outcome.status != "done" else None, finished_at=time.time())
            self.db.add_event(item.run_id, outcome.status, outcome.message or f"finished {outcome.steps_done} steps")
        except Exception as exc:  # any failure ends this run only, with its message kept
            log.exception("run %s failed", item.run_id)
            # The traceback's frames hold the student, optimizer and activations (an OOM's cause):
            # drop their locals so the memory is freed even if a log handler keeps the record.
            traceback.clear_frames(exc.__traceback__)
            writer.close()
            message = f"{type(exc).__name__}: {exc}"
            self.db.update_run(item.run_id, status="failed", error=message, finished_at=time.time())
            self.db.add_event(item.run_id, "failed", message)
        finally:
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def _train(self, item: _QueuedRun, writer: MetricWriter, stop: threading.Event) -> RunOutcome:
        cfg = item.config
        device = resolve_device(cfg.train.device)
        teacher, tokenizer = self.teachers.get(cfg.teacher, device, trust_remote_code=cfg.trust_remote_code)
        # float32 master weights for the student everywhere (the frozen teacher may be bf16 on CUDA).
        student, _ = load_student(ModelSource.parse(cfg.student, trust_remote_code=cfg.trust_remote_code), teacher,
                                  tokenizer, device, torch.float32)
        self.db.update_run(item.run_id, status="running", started_at=time.time(), device=str(device))
        trainer = RunTrainer(cfg, teacher, student, tokenizer, item.dataset, device)

        def report(step_report: StepReport) -> None:
            writer.log(item.run_id, step_report.step, step_report.metrics, wall_time=time.time())
            if step_report.samples:
                self._store_samples(item.run_id, step_report)

        outcome = trainer.run(report, should_stop=stop.is_set)
        if outcome.status == "done" and cfg.train.save_students:
            run = self.db.get_run(item.run_id)
            folder = save_student(student, tokenizer, f"exp{run['experiment_id']}-{cfg.variant.name}-seed{cfg.seed}")
            self.db.add_event(item.run_id, "saved", f"student saved to {folder}")
        return outcome

    def _store_samples(self, run_id: int, step_report: StepReport) -> None:
        """Samples are few and rare (evaluation steps); a failed write is logged, never fatal."""
        try:
            self.db.add_samples(run_id, step_report.step, step_report.samples)
        except Exception:
            log.exception("could not store samples of run %s at step %s", run_id, step_report.step)

"""Background jobs: one folder and one worker thread per job, a queue, cancel, isolation.

A job is a *task*: a function ``task(progress, stop_check) -> result`` (a
:data:`genfusion.progress.ProgressCallback` and a ``() -> bool``), which is what every long
operation of the library takes. Today's task is a reconstruction (:mod:`app.tasks`); the fusion
loop will be another one, queued the same way.

Each job lives in ``<root>/<job id>/``::

    job.json       the record: id, owner (hashed), kind, title, state, times, message, result, params
    events.jsonl   one JSON line per ProgressEvent (without its payload), appended as they come
    error.log      the traceback of an unexpected error, if one happened
    ...            whatever the task writes (upload/, scene/, run/, exports/, camera_path.json)

- **Queue.** At most ``max_concurrent`` jobs run at once; the others wait in submission order.
- **Cancel.** ``cancel`` sets the job's stop flag; the task's ``stop_check`` sees it between two
  steps and raises :class:`genfusion.errors.Cancelled`, after leaving its folder consistent.
  A queued job is cancelled without starting.
- **Isolation.** Job ids are 96 random bits (hex), so a job cannot be guessed; each job records a
  hash of its owner's key and ``list_jobs(owner)`` returns only that owner's jobs. Any id passed
  in is checked against the id pattern before it touches the file system.
- **Restart.** A new manager on the same root lists every job folder again; jobs that were still
  queued or running when the server stopped become ``interrupted``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
import shutil
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from genfusion.atomic import write_json_atomic
from genfusion.errors import Cancelled, GenFusionError
from genfusion.progress import ProgressCallback, ProgressEvent

logger = logging.getLogger(__name__)

JobState = Literal["new", "queued", "running", "done", "failed", "cancelled", "interrupted"]
FINISHED_STATES = ("done", "failed", "cancelled", "interrupted")
StopCheck = Callable[[], bool]
Task = Callable[[ProgressCallback, StopCheck], dict[str, Any]]
Listener = Callable[["Job", ProgressEvent], None]

JOB_ID = re.compile(r"[0-9a-f]{24}")
PUBLIC_OWNER = "public"  # jobs every session may see (the --demo job at start-up); read-only
RECORD_NAME = "job.json"
EVENTS_NAME = "events.jsonl"
ERROR_LOG = "error.log"


def owner_hash(owner_key: str) -> str:
    """What a job stores about its owner: a hash, so job.json never holds a session key."""
    return hashlib.sha256(("genfusion-owner:" + owner_key).encode()).hexdigest()[:32]


def check_job_id(job_id: str) -> str:
    """``job_id`` if it has the form of a job id; GenFusionError otherwise (never a path)."""
    if not isinstance(job_id, str) or not JOB_ID.fullmatch(job_id.strip()):
        raise GenFusionError(
            f"{str(job_id)[:40]!r} is not a job id.", hint="Pick a job from your list of jobs."
        )
    return job_id.strip()


@dataclass
class JobRecord:
    """What ``job.json`` holds."""

    id: str
    owner: str  # owner_hash() of the creating session's key
    kind: str  # the job kind ("reconstruct"; later "fusion")
    title: str  # one line for lists
    created: float  # unix time
    state: JobState = "new"
    started: float | None = None
    finished: float | None = None
    message: str = ""  # the last status line, or the error a user can act on
    result: dict[str, Any] = field(default_factory=dict)  # what the task returned
    params: dict[str, Any] = field(default_factory=dict)  # settings and capture, for display and reuse

    @property
    def finished_ok(self) -> bool:
        return self.state == "done"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobRecord:
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in names})


def event_dict(event: ProgressEvent, t: float | None = None) -> dict[str, Any]:
    """A ProgressEvent as one JSON-ready line (the payload stays in memory only)."""
    return {
        "t": round(time.time() if t is None else t, 3),
        "stage": event.stage,
        "step": event.step,
        "total": event.total,
        "message": event.message,
        "metrics": {k: float(v) for k, v in event.metrics.items()},
    }


class Job:
    """A job at run time: its record, folder, events and stop flag."""

    def __init__(self, record: JobRecord, folder: Path, events: list[dict[str, Any]] | None = None):
        self.record = record
        self.folder = folder
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self._events: list[dict[str, Any]] = list(events or [])
        self._events_loaded = events is not None
        self.thread: threading.Thread | None = None
        self.listeners: list[Listener] = []

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def state(self) -> JobState:
        return self.record.state

    @property
    def finished(self) -> bool:
        return self.record.state in FINISHED_STATES

    def save(self) -> None:
        """Write ``job.json`` atomically."""
        with self.lock:
            data = self.record.to_dict()
        write_json_atomic(self.folder / RECORD_NAME, data)

    def events(self, since: int = 0) -> list[dict[str, Any]]:
        """Events from index ``since`` on (read from ``events.jsonl`` for jobs of an earlier run)."""
        with self.lock:
            if not self._events_loaded:
                self._events = _read_events(self.folder / EVENTS_NAME)
                self._events_loaded = True
            return list(self._events[since:])

    def last_event(self, stage_prefix: str = "") -> dict[str, Any] | None:
        with self.lock:
            for event in reversed(self._events):
                if event["stage"].startswith(stage_prefix):
                    return event
        return None

    def record_event(self, event: ProgressEvent) -> None:
        """Keep ``event``, append it to ``events.jsonl`` and hand it to the listeners."""
        line = event_dict(event)
        with self.lock:
            self._events.append(line)
            self._events_loaded = True
            if event.message and event.stage != "job":
                self.record.message = event.message
            with open(self.folder / EVENTS_NAME, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(line) + "\n")
            listeners = list(self.listeners)
        for listener in listeners:
            try:
                listener(self, event)
            except Exception:  # a viewer problem must never stop the job
                logger.exception("job %s: event listener failed", self.id)


def _read_events(path: Path) -> list[dict[str, Any]]:
    events = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut short by a crash
    return events


class JobManager:
    """Creates, queues, runs, cancels and lists jobs under ``root``."""

    def __init__(self, root: str | Path, *, max_concurrent: int = 1):
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_concurrent = max_concurrent
        self._lock = threading.RLock()
        self._jobs: dict[str, Job] = {}
        self._tasks: dict[str, Task] = {}
        self._queue: deque[str] = deque()
        self._running: set[str] = set()
        self._closed = False
        self.listeners: list[Listener] = []  # called for every job's events (the viewers)
        self._load_existing()

    # ------------------------------------------------------------------ folders

    def _load_existing(self) -> None:
        for record_path in sorted(self.root.glob(f"*/{RECORD_NAME}")):
            folder = record_path.parent
            if not JOB_ID.fullmatch(folder.name):
                continue
            try:
                record = JobRecord.from_dict(json.loads(record_path.read_text(encoding="utf-8")))
            except (OSError, json.JSONDecodeError, TypeError, KeyError):
                logger.warning("skipping unreadable job record %s", record_path)
                continue
            if record.id != folder.name:
                continue
            job = Job(record, folder)
            if record.state in ("new", "queued", "running"):
                record.state = "interrupted"
                record.finished = record.finished or time.time()
                record.message = (
                    "The server stopped before this job finished; its folder keeps what was written "
                    "(a checkpoint, when training had saved one)."
                )
                job.save()
            self._jobs[record.id] = job

    def create(self, owner_key: str, kind: str, title: str, params: dict[str, Any] | None = None) -> Job:
        """A new job folder with its record (state ``new``); fill it, then :meth:`submit` it
        (or :meth:`discard` it when its input is refused)."""
        with self._lock:
            if self._closed:
                raise GenFusionError("the server is shutting down; try again in a moment.")
            job_id = secrets.token_hex(12)
            folder = self.root / job_id
            folder.mkdir()
            record = JobRecord(
                id=job_id,
                owner=owner_hash(owner_key),
                kind=kind,
                title=title,
                created=time.time(),
                params=dict(params or {}),
            )
            job = Job(record, folder, events=[])
            job.save()
            self._jobs[job_id] = job
            return job

    def discard(self, job: Job) -> None:
        """Remove a job that was never submitted (its input was refused), folder and all."""
        with self._lock:
            if job.state != "new":
                raise ValueError(f"job {job.id} was submitted; cancel it instead")
            self._jobs.pop(job.id, None)
        shutil.rmtree(job.folder, ignore_errors=True)

    # ------------------------------------------------------------------ running

    def submit(self, job: Job, task: Task) -> None:
        """Queue ``job`` to run ``task``; it starts as soon as a slot is free."""
        with self._lock:
            if job.state != "new":
                raise ValueError(f"job {job.id} was already submitted")
            job.record.state = "queued"
            job.record.message = "waiting for a free slot"
            job.save()
            self._tasks[job.id] = task
            self._queue.append(job.id)
            self._start_ready()

    def _start_ready(self) -> None:
        with self._lock:
            while self._queue and len(self._running) < self.max_concurrent and not self._closed:
                job = self._jobs[self._queue.popleft()]
                task = self._tasks.pop(job.id)
                self._running.add(job.id)
                job.record.state = "running"
                job.record.started = time.time()
                job.record.message = "starting"
                job.save()
                job.thread = threading.Thread(
                    target=self._run, args=(job, task), name=f"job-{job.id[:8]}", daemon=True
                )
                job.thread.start()

    def _run(self, job: Job, task: Task) -> None:
        def progress(event: ProgressEvent) -> None:
            job.record_event(event)
            for listener in list(self.listeners):
                try:
                    listener(job, event)
                except Exception:
                    logger.exception("job %s: manager listener failed", job.id)

        state: JobState
        try:
            result = task(progress, job.stop.is_set)
            state, message = "done", "finished"
            job.record.result = dict(result or {})
        except Cancelled as err:
            state, message = "cancelled", str(err)
        except GenFusionError as err:
            state, message = "failed", str(err)
        except Exception as err:  # a bug: keep the server up, say where the details are
            state = "failed"
            message = f"internal error ({type(err).__name__}: {err}); details in {job.folder / ERROR_LOG}"
            (job.folder / ERROR_LOG).write_text(traceback.format_exc(), encoding="utf-8")
            logger.exception("job %s failed", job.id)
        with job.lock:
            job.record.state = state
            job.record.message = message
            job.record.finished = time.time()
        job.save()
        finished = ProgressEvent(stage="job", step=1, total=1, message=f"{state}: {message}")
        progress(finished)
        with self._lock:
            self._running.discard(job.id)
        self._start_ready()

    def cancel(self, job_id: str, owner_key: str | None = None) -> Job:
        """Stop a running job (its task raises Cancelled within a step) or drop a queued one."""
        job = self.get(job_id, owner_key, write=True)
        with self._lock:
            if job.id in self._queue:
                self._queue.remove(job.id)
                self._tasks.pop(job.id, None)
                job.record.state = "cancelled"
                job.record.finished = time.time()
                job.record.message = "cancelled before it started"
                job.save()
                return job
        job.stop.set()
        return job

    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """Block until the job has finished (or ``timeout`` seconds passed)."""
        job = self.get(job_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        while not job.finished:
            if deadline is not None and time.monotonic() > deadline:
                break
            time.sleep(0.05)
        return job

    # ------------------------------------------------------------------ lookups

    def get(self, job_id: str, owner_key: str | None = None, *, write: bool = False) -> Job:
        """The job ``job_id``; with ``owner_key``, only if that owner created it (or, unless
        ``write``, if it is a public job)."""
        job_id = check_job_id(job_id)
        with self._lock:
            job = self._jobs.get(job_id)
        if job is not None and owner_key is not None:
            allowed = {owner_hash(owner_key)} | (set() if write else {owner_hash(PUBLIC_OWNER)})
            if job.record.owner not in allowed:
                job = None
        if job is None:
            raise GenFusionError(f"there is no job {job_id} in this session.", hint="Pick one of your jobs.")
        return job

    def list_jobs(self, owner_key: str) -> list[Job]:
        """The owner's jobs and the public ones (submitted ones only), newest first."""
        wanted = {owner_hash(owner_key), owner_hash(PUBLIC_OWNER)}
        with self._lock:
            jobs = [j for j in self._jobs.values() if j.record.owner in wanted and j.state != "new"]
        return sorted(jobs, key=lambda j: j.record.created, reverse=True)

    def queue_position(self, job_id: str) -> int | None:
        """How many queued jobs are ahead of ``job_id`` (None when it is not queued)."""
        with self._lock:
            return list(self._queue).index(job_id) if job_id in self._queue else None

    def running(self) -> list[Job]:
        with self._lock:
            return [self._jobs[i] for i in self._running]

    def shutdown(self, timeout: float = 10.0) -> None:
        """Cancel every job and wait (up to ``timeout`` s) for the workers to stop."""
        with self._lock:
            self._closed = True
            queued = list(self._queue)
        for job_id in queued:
            self.cancel(job_id)
        jobs = self.running()
        for job in jobs:
            job.stop.set()
        deadline = time.monotonic() + timeout
        for job in jobs:
            if job.thread is not None:
                job.thread.join(max(0.0, deadline - time.monotonic()))


__all__ = [
    "FINISHED_STATES",
    "PUBLIC_OWNER",
    "Job",
    "JobManager",
    "JobRecord",
    "JobState",
    "StopCheck",
    "Task",
    "check_job_id",
    "event_dict",
    "owner_hash",
]

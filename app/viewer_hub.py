"""All the jobs' live viewers (:class:`ViewerHub`): it listens to every job's events, makes a
:class:`app.viewer.JobViewer` when a job starts training, makes one on demand for a finished job
(read from its folder), and closes the least recently used viewers of finished jobs beyond
``max_viewers``.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

from app.jobs import Job, JobManager
from app.tasks import SceneCameras
from app.viewer import JobViewer
from genfusion.errors import GenFusionError
from genfusion.progress import ProgressEvent


class ViewerHub:
    """The viewers of all jobs: made when a job trains or when a finished job is opened."""

    def __init__(self, jobs: JobManager, *, max_viewers: int = 4, interval_s: float = 2.0):
        self.jobs = jobs
        self.max_viewers = max_viewers
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._viewers: OrderedDict[str, JobViewer] = OrderedDict()
        jobs.listeners.append(self.on_event)

    def on_event(self, job: Job, event: ProgressEvent) -> None:
        """Every job's events: the viewer is made at the job's ``capture`` event."""
        with self._lock:
            viewer = self._viewers.get(job.id)
        if viewer is None and isinstance(event.payload, SceneCameras):
            viewer = self._make(job)
        if viewer is not None:
            viewer.on_event(event)

    def _make(self, job: Job, *, from_folder: bool = False) -> JobViewer:
        viewer = JobViewer(job.id, job.folder, interval_s=self.interval_s)
        if from_folder:
            try:
                viewer.load_job_folder()
            except GenFusionError as err:
                viewer.status.content = f"Nothing to show: {err}"
        with self._lock:
            old = self._viewers.pop(job.id, None)
            self._viewers[job.id] = viewer
            evict = self._evictable()
        for stale in [old, *evict]:
            if stale is not None and stale is not viewer:
                stale.close()
        return viewer

    def _evictable(self) -> list[JobViewer]:
        """Least recently used viewers of finished jobs beyond the limit (under the lock)."""
        evicted = []
        for job_id in list(self._viewers):
            if len(self._viewers) - len(evicted) <= self.max_viewers:
                break
            try:
                finished = self.jobs.get(job_id).finished
            except GenFusionError:
                finished = True
            if finished:
                evicted.append(self._viewers.pop(job_id))
        return evicted

    def viewer(self, job_id: str) -> JobViewer:
        """The viewer of ``job_id`` (any session: the id is the capability), made on demand."""
        job = self.jobs.get(job_id)
        with self._lock:
            viewer = self._viewers.get(job.id)
            if viewer is not None:
                self._viewers.move_to_end(job.id)
        if viewer is None:
            viewer = self._make(job, from_folder=job.finished)
        viewer.last_used = time.monotonic()
        return viewer

    def port_of(self, job_id: str) -> int | None:
        """The local port of the job's viewer; None for an unknown job."""
        try:
            return self.viewer(job_id).port
        except GenFusionError:
            return None

    def close(self) -> None:
        with self._lock:
            viewers = list(self._viewers.values())
            self._viewers.clear()
        for viewer in viewers:
            viewer.close()


__all__ = ["ViewerHub"]

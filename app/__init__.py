"""GenFusion Studio's app: a thin Gradio + viser layer over the ``genfusion`` library.

Modules, one job each:

- :mod:`app.params`: UI controls generated from :class:`genfusion.splat.config.ReconstructConfig`
  (one source for CLI flags and widgets) and the values they give back.
- :mod:`app.capture`: what the user hands in (uploads, a server folder, the demo scene) -> a
  capture inside the job folder, with every bad input turned into a :class:`GenFusionError`.
- :mod:`app.jobs`: background jobs, one folder and one worker thread each, a queue, cancel,
  per-session isolation, events kept in memory and in ``events.jsonl``.
- :mod:`app.tasks`: the job kinds (today: reconstruct) and the exports of a finished job.
- :mod:`app.viewer`: a viser server per job that streams the Gaussians while they train.
- :mod:`app.proxy`: forwards ``/viewer/<job>/`` (HTTP and websocket) to that viser server, so
  everything is served from one port.
- :mod:`app.ui`: the Gradio Blocks page and its API, built from :mod:`app.ui_api` (the API
  actions and the caller's identity), :mod:`app.ui_fusion` (the fusion box) and
  :mod:`app.ui_job` (the job column and its updates).
- :mod:`app.server`: the FastAPI app that puts Gradio and the viewer proxy on one port.

``app`` is run from the checkout (``python launch.py``), never installed into site-packages.
"""

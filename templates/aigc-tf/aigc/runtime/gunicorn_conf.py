"""gunicorn settings for every template: `python -m gunicorn -c python:aigc.runtime.gunicorn_conf index:app`.

Models load in each worker after fork, never in the preloading master: an
engine's thread pools do not survive fork. Workers leave with os._exit because
onnxruntime imported before fork hangs a sync worker's interpreter teardown
until graceful_timeout (30 s measured here), which would stall scale-to-zero;
gthread workers (our default) were not seen to hang, but users may switch.
"""

import os
import shutil
import tempfile

from aigc.runtime.config import Settings

_settings = Settings.from_env()

bind = f"{_settings.host}:{_settings.port}"
workers = _settings.workers
threads = _settings.threads
worker_class = _settings.worker_class
preload_app = True
graceful_timeout = int(_settings.exec_timeout) + 1
timeout = max(30, int(_settings.exec_timeout) + 5)
keepalive = 5
limit_request_line = 8190
# gunicorn 27's control socket defaults to one path per user, which side-by-side instances would fight over
control_socket_disable = True

if workers > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
    # set before the app (and prometheus_client) is imported by preload
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="aigc-metrics-")


def post_worker_init(worker):
    runtime = worker.wsgi.extensions["aigc"]
    runtime.start_loading()


def child_exit(server, worker):
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def worker_exit(server, worker):
    os._exit(0)


def on_exit(server):
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
    if path.startswith(tempfile.gettempdir()) and "aigc-metrics-" in path:
        shutil.rmtree(path, ignore_errors=True)

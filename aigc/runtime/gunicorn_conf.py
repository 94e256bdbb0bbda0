"""gunicorn settings for every template: `python -m gunicorn -c python:aigc.runtime.gunicorn_conf index:app`.

Models load in each worker after fork, never in the preloading master: an
engine's thread pools do not survive fork (a zygote, zygote.py, loads fork-safe
models before forking, on one thread, and the worker re-threads them). Workers leave with os._exit because
onnxruntime imported before fork hangs a sync worker's interpreter teardown
until graceful_timeout (30 s measured here), which would stall scale-to-zero;
gthread workers (our default) were not seen to hang, but users may switch.
"""

import logging
import os
import shutil
import sys
import tempfile

from aigc.runtime.config import Settings

_settings = Settings.from_env()

# the runtime's own lines (a model ready or failed, with its pull) go to stderr beside gunicorn's
_handler = logging.StreamHandler(sys.stderr)
_handler.setFormatter(logging.Formatter("%(asctime)s [%(process)d] [%(levelname)s] %(name)s: %(message)s",
                                        "%Y-%m-%d %H:%M:%S %z"))
logging.getLogger("aigc").addHandler(_handler)
logging.getLogger("aigc").setLevel(logging.INFO)

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
# worker heartbeats: /dev/shm is a tmpfs in every container, also under a read-only root filesystem
if os.access("/dev/shm", os.W_OK):
    worker_tmp_dir = "/dev/shm"

if workers > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
    # set before the app (and prometheus_client) is imported by preload
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="aigc-metrics-")


def post_worker_init(worker):
    runtime = worker.wsgi.extensions["aigc"]
    runtime.after_fork()  # forked from a zygote (zygote.py): its one-thread sessions get their threads
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

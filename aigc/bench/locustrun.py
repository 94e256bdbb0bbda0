"""Run a locust suite headless in its own process and say where its outputs went."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .gateway import REPO

LOADTESTS = REPO / "loadtests"
# function name -> its locustfile; anything else gets the generic one (send a body, expect 2xx)
LOCUSTFILES = {"image-classify": "image_classify.py", "embed": "embed.py", "text-generate": "text_generate.py",
               "speech": "speech.py", "image-generate": "image_generate.py"}


def locustfile_for(function: str, override: str | None = None) -> Path:
    path = Path(override) if override else LOADTESTS / LOCUSTFILES.get(function, "generic.py")
    if not path.is_file():
        raise FileNotFoundError(f"locustfile {path} not found")
    return path


@dataclass
class Outputs:
    out: Path
    prefix: str = "locust"

    def path(self, suffix: str) -> Path:
        return self.out / f"{self.prefix}{suffix}"

    @property
    def stats(self) -> Path:
        return self.path("_stats.csv")

    @property
    def history(self) -> Path:
        return self.path("_stats_history.csv")

    @property
    def html(self) -> Path:
        return self.path(".html")

    @property
    def samples(self) -> Path:
        return self.path("_samples.csv")

    @property
    def replicas(self) -> Path:
        return self.path("_replicas.csv")

    @property
    def log(self) -> Path:
        return self.path(".log")


def run(locustfiles: list[Path], host: str, outputs: Outputs, *, function: str, user: str, password: str,
        options: list[str], timeout: float, extra: list[str] = ()) -> int:
    """locust --headless with CSV (full history), HTML, samples and replica polling; its exit code.

    `timeout` is a hard stop on top of the suite's own bound (run time, cycles
    or shape), so a stuck gateway cannot hold the run forever.
    """
    outputs.out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "locust", "-f", ",".join(str(p) for p in locustfiles), "--headless",
           "--host", host, "--function", function, "--only-summary",
           "--csv", str(outputs.path("")), "--csv-full-history", "--html", str(outputs.html),
           "--samples-csv", str(outputs.samples), "--replicas-csv", str(outputs.replicas),
           "--logfile", str(outputs.log), *options, *extra]
    # the password goes through the environment, not argv, which any local user can read in ps
    env = dict(os.environ, LOCUST_GATEWAY_USER=user, LOCUST_GATEWAY_PASSWORD=password)
    with open(outputs.path("_stdout.txt"), "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.terminate()  # SIGTERM: locust still writes its CSV and HTML on the way out
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            raise TimeoutError(f"locust ran past its {timeout:.0f}s limit; see {outputs.log}") from None

"""docs/monitoring/ with the real thing: Debian's Prometheus (2.42, installed by run.sh) scraping a live `aigc up`
and its replicas with the committed prometheus.yml, the committed alert rules loaded, and every query of the
committed Grafana dashboard evaluated after traffic (calls, errors, a killed replica, cold starts)."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests
import yaml

from aigc.bench.gateway import LocalGateway, free_port, write_echo_stack
from conftest import REPO

MONITORING = REPO / "docs" / "monitoring"
PROMETHEUS, PROMTOOL = Path("/usr/bin/prometheus"), Path("/usr/bin/promtool")
JOBS = {"aigc-gateway", "aigc-functions"}
# what Grafana puts in place of its own variables here: windows long enough to hold all of this test's traffic,
# so every rate has samples from before and after it
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "5m"}


def require(tool: Path) -> None:
    # CI installs Debian's prometheus (run.sh): a missing binary is a broken setup, not a reason to skip
    if not tool.exists():
        pytest.fail(f"Debian's Prometheus is needed at {tool} for the monitoring tests: "
                    "run `apt-get install -y prometheus` (run.sh test does)")


def promtool(*args: str) -> str:
    require(PROMTOOL)
    out = subprocess.run([str(PROMTOOL), *args], cwd=MONITORING, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"promtool {' '.join(args)}:\n{out.stdout}{out.stderr}"
    return out.stdout


def dashboard() -> dict:
    return json.loads((MONITORING / "grafana-dashboard.json").read_text())


def queries(dash: dict) -> list[tuple[str, str]]:
    """(panel title, expr) for every query of every panel, rows' nested panels included."""
    found = []
    for panel in dash["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            found += [(inner["title"], t["expr"]) for t in inner.get("targets", [])]
    return found


# --- the committed files, checked by Prometheus' own tool -------------------------------------------------
def test_committed_config_and_alert_rules_are_valid():
    assert "SUCCESS" in promtool("check", "config", "prometheus.yml")
    assert "SUCCESS" in promtool("check", "rules", "alerts.yml")


def test_every_alert_fires_on_series_over_its_threshold_and_not_below():
    # the unit tests in alerts_test.yml: rendered labels and annotations at given times, quiet cases included
    assert "SUCCESS" in promtool("test", "rules", "alerts_test.yml")
    tested = set(re.findall(r"alertname: (\w+)", (MONITORING / "alerts_test.yml").read_text()))
    rules = {r["alert"] for g in yaml.safe_load((MONITORING / "alerts.yml").read_text())["groups"] for r in g["rules"]}
    assert tested == rules, f"alerts without a case in alerts_test.yml: {sorted(rules - tested)}"


def test_dashboard_is_a_grafana_model_whose_variables_are_all_defined():
    dash = dashboard()
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert variables["function"]["datasource"]["uid"] == "${datasource}"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    taken: dict[tuple[int, int], str] = {}  # grid cells: Grafana's 24 columns, panels must not overlap
    for panel in dash["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["w"] > 0 and grid["h"] > 0, panel["title"]
        for cell in ((x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                     for y in range(grid["y"], grid["y"] + grid["h"])):
            assert cell not in taken, f"{panel['title']} overlaps {taken[cell]}"
            taken[cell] = panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
    found = queries(dash)
    assert len(found) >= 15
    for title, expr in found:
        for name in re.findall(r"\$(\w+)", expr):
            assert name in variables or f"${name}" in GRAFANA_VARIABLES, f"{title}: ${name} is not defined"


# --- live: the gateway, its replicas and Prometheus -------------------------------------------------------
class Prometheus:
    """Debian's /usr/bin/prometheus on a free loopback port with its own TSDB: never the system service."""

    def __init__(self, config: Path, work: Path):
        require(PROMETHEUS)
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log_path = work / "prometheus.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [str(PROMETHEUS), f"--config.file={config}", f"--storage.tsdb.path={work / 'tsdb'}",
                 f"--web.listen-address={urlsplit(self.url).netloc}"], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        try:
            while not self._ready():
                assert self.process.poll() is None, f"prometheus exited: {self.log_tail()}"
                assert time.monotonic() < deadline, f"prometheus not ready in 30 s: {self.log_tail()}"
                time.sleep(0.1)
        except BaseException:
            self.stop()
            raise

    def _ready(self) -> bool:
        try:
            return requests.get(self.url + "/-/ready", timeout=1).status_code == 200
        except requests.ConnectionError:
            return False

    def api(self, path: str, **params) -> dict:
        resp = requests.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        body = resp.json()
        assert body["status"] == "success", (path, params, body)
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        return self.api("query", query=expr)["result"]

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-2000:]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def derived_config(gw: LocalGateway, work: Path) -> Path:
    """The committed prometheus.yml with only what differs here put in: this gateway's address, its password
    file, the rule file's absolute path, and 1 s intervals so the test takes seconds rather than minutes."""
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == JOBS, f"the test expects the jobs {sorted(JOBS)}, the config has {sorted(jobs)}"
    address = urlsplit(gw.url).netloc
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(MONITORING / name) for name in config["rule_files"]]
    jobs["aigc-gateway"]["static_configs"] = [{"targets": [address]}]
    (sd,) = jobs["aigc-functions"]["http_sd_configs"]
    sd["url"] = urlunsplit(urlsplit(sd["url"])._replace(netloc=address))
    sd["refresh_interval"] = "1s"
    sd["basic_auth"]["password_file"] = str(gw.state_dir / "secrets" / "basic-auth-password")
    path = work / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def replica_targets(gw: LocalGateway) -> list[dict]:
    return gw.client.session.get(gw.url + "/system/prometheus-targets", timeout=10).json()


def wait_until(predicate, timeout: float, what):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, what() if callable(what) else what
        time.sleep(0.2)


def traffic(gw: LocalGateway, calls: int, seconds: float, failures: int = 0) -> None:
    """`calls` 200s spread over `seconds` (so several scrapes see the counters move), `failures` 500s among them."""
    url = gw.url + "/function/echo"
    for i in range(calls):
        assert requests.post(url, data=b"x", timeout=30).status_code == 200
        if i < failures:
            assert requests.post(url + "/fail", data=b"x", timeout=30).status_code == 500
        time.sleep(seconds / calls)


def cold_start(gw: LocalGateway) -> None:
    """Scale echo to zero through the API, then call it: the call waits for a replica to start."""
    gw.client.scale("echo", 0)
    gw.client.wait_for("echo", lambda s: s["replicas"] == 0 and s["availableReplicas"] == 0, 30, "zero replicas")
    started = time.monotonic()
    assert requests.post(gw.url + "/function/echo", data=b"x", timeout=60).status_code == 200
    assert time.monotonic() - started < 30


def every_target_up(prometheus: Prometheus, timeout: float = 30) -> list[dict]:
    """Prometheus' active targets once both jobs have targets, all healthy, and `up` is 1 for every series."""
    def check():
        targets = prometheus.api("targets", state="active")["activeTargets"]
        if {t["labels"]["job"] for t in targets} != JOBS or any(t["health"] != "up" for t in targets):
            return None
        up = prometheus.query('up{job=~"aigc-gateway|aigc-functions"}')
        return targets if len(up) == len(targets) and all(s["value"][1] == "1" for s in up) else None

    return wait_until(check, timeout, lambda: f"targets not all up: {json.dumps(prometheus.api('targets'))}\n"
                                              f"up: {prometheus.query('up')}\n{prometheus.log_tail()}")


def finite(result: list[dict]) -> bool:
    return any(math.isfinite(float(sample["value"][1])) for sample in result)


@pytest.mark.slow
def test_prometheus_scrapes_every_target_and_every_dashboard_query_returns_data(tmp_path):
    require(PROMETHEUS)
    gw = LocalGateway(write_echo_stack(tmp_path / "stack.yml"), tmp_path / "gateway.log")
    prometheus = None
    try:
        gw.client.wait_for("echo", lambda s: s["availableReplicas"] == 1, 60, "a ready replica")
        # the discovery route: basic auth like every /system route, one group per ready replica
        assert requests.get(gw.url + "/system/prometheus-targets", timeout=10).status_code == 401
        (group,) = replica_targets(gw)
        assert group["labels"]["__meta_aigc_function_name"] == "echo"
        first = group["labels"]["__meta_aigc_replica"]
        host, port = group["targets"][0].split(":")
        assert host == "127.0.0.1" and requests.get(f"http://{host}:{port}/metrics", timeout=10).ok

        prometheus = Prometheus(derived_config(gw, tmp_path), tmp_path)
        # Prometheus hands discovered targets to its scrapers at most every 5 s: wait for the first scrapes, so
        # the counters below are seen moving rather than first seen at their final values
        every_target_up(prometheus)
        traffic(gw, calls=10, seconds=2, failures=10)
        # a replica that dies (gateway_replica_exits_total) and its replacement, found again by discovery
        os.killpg(requests.get(gw.url + "/function/echo/pid", timeout=10).json()["pgid"], signal.SIGKILL)
        wait_until(lambda: [g for g in replica_targets(gw) if g["labels"]["__meta_aigc_replica"] != first], 30,
                   "no replacement replica listed after the kill")
        # two cold starts a scrape apart, so the cold-start histograms have a rate, not only a first sample
        cold_start(gw)
        time.sleep(1.5)
        cold_start(gw)
        gw.client.scale("echo", 1)  # back to the stack's floor: the replica stays to be scraped
        traffic(gw, calls=10, seconds=3)

        # every target up, as Prometheus sees them and as `up` says (a stopped replica's target stays, down,
        # until discovery drops it); the replica under the relabelled names, the same ones the gateway lists
        targets = every_target_up(prometheus)
        replicas = [t for t in targets if t["labels"]["job"] == "aigc-functions"]
        listed = replica_targets(gw)
        assert sorted(t["scrapeUrl"] for t in replicas) == sorted(f"http://{g['targets'][0]}/metrics" for g in listed)
        assert all(t["labels"]["function_name"] == "echo" and t["labels"]["replica"].startswith("echo-")
                   for t in replicas), replicas

        # the dashboard's variable offers the function, and every panel's query has data
        variable = next(v for v in dashboard()["templating"]["list"] if v["name"] == "function")
        metric, label = re.fullmatch(r"label_values\((\w+), *(\w+)\)", variable["definition"]).groups()
        assert "echo" in prometheus.api(f"label/{label}/values", **{"match[]": metric})
        values = dict(GRAFANA_VARIABLES, **{"$function": "echo"})
        exprs = []
        for title, expr in queries(dashboard()):
            # longest name first, so no name is replaced inside a longer one
            for name, value in sorted(values.items(), key=lambda kv: -len(kv[0])):
                expr = expr.replace(name, value)
            exprs.append((title, expr))
        results: dict[str, list] = {}

        def all_have_data():
            for title, expr in exprs:
                if not finite(results.get(expr) or []):
                    results[expr] = prometheus.query(expr)
            return all(finite(results[expr]) for _, expr in exprs)

        deadline = time.monotonic() + 20
        while not all_have_data() and time.monotonic() < deadline:
            time.sleep(0.5)
        empty = [f"{title}: {expr} -> {results[expr]}" for title, expr in exprs if not finite(results[expr])]
        assert not empty, "dashboard queries without data:\n" + "\n".join(empty)

        # the alert rules are loaded and evaluate without errors against the live series
        names = {r["alert"] for g in yaml.safe_load((MONITORING / "alerts.yml").read_text())["groups"]
                 for r in g["rules"]}

        def rules_ok():
            rules = [r for g in prometheus.api("rules")["groups"] for r in g["rules"]]
            return rules if {r["name"] for r in rules} == names and all(r["health"] == "ok" for r in rules) else None

        wait_until(rules_ok, 15, lambda: f"rules not all loaded and healthy: {prometheus.api('rules')}")
    finally:
        if prometheus:
            prometheus.stop()
        gw.stop()

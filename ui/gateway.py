"""A client for the OpenFaaS gateway REST API, as the UI uses it.

Works against `aigc up` and a real OpenFaaS gateway alike: only the documented
paths (/system/*, /function/*, /metrics) are used. Failures become three
exception kinds the app turns into pages: the gateway is unreachable, it
refused our credentials, or it answered with an error of its own.
"""

from __future__ import annotations

import re
from typing import Any

import requests

NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")  # OpenFaaS function names are DNS labels
MODEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")  # a model store entry


class GatewayError(Exception):
    """The gateway answered, but with an error; `message` is its own words when it gave some. `field` names
    the form field at fault, so the page shows the message beside it."""

    def __init__(self, status: int, message: str, field: str | None = None):
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
        self.field = field


class GatewayUnauthorized(GatewayError):
    pass


class GatewayUnreachable(Exception):
    def __init__(self, url: str, reason: str):
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason


def check_name(name: str) -> str:
    if not NAME.match(name or ""):
        raise GatewayError(400, f"{name!r} is not a function name (lowercase letters, digits and '-')")
    return name


def _message(resp: requests.Response) -> str:
    try:
        body = resp.json()
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            return body["error"]
    except ValueError:
        pass
    text = resp.text.strip()
    return text[:500] or resp.reason or "no details"


class Gateway:
    def __init__(self, url: str, auth: tuple[str, str] | None, timeout: float = 30.0, invoke_timeout: float = 300.0):
        self.url = url.rstrip("/")
        self.auth = auth
        self.timeout = timeout
        self.invoke_timeout = invoke_timeout
        # the app makes one client per browser request: holding pooled sockets for idle users is not
        # worth the saved handshake on loopback, and nothing (credentials included) outlives the request
        self.http = requests.Session()

    def request(self, method: str, path: str, *, auth: bool = True, timeout: float | None = None,
                stream: bool = False, **kwargs) -> requests.Response:
        url = self.url + path
        try:
            resp = self.http.request(method, url, auth=self.auth if auth else None, stream=stream,
                                     timeout=timeout or self.timeout, allow_redirects=False, **kwargs)
        except requests.ConnectionError as exc:
            raise GatewayUnreachable(self.url, _reason(exc)) from None
        except requests.Timeout:
            raise GatewayUnreachable(self.url, f"no answer within {timeout or self.timeout:g} s") from None
        if resp.status_code == 401 and auth:
            resp.close()
            raise GatewayUnauthorized(401, "the gateway refused these credentials")
        return resp

    def _ok(self, resp: requests.Response, *ok: int) -> requests.Response:
        if resp.status_code not in ok:
            raise GatewayError(resp.status_code, _message(resp))
        return resp

    # --- /system --------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        return self._ok(self.request("GET", "/system/info"), 200).json()

    def functions(self) -> list[dict[str, Any]]:
        return self._ok(self.request("GET", "/system/functions"), 200).json()

    def function(self, name: str) -> dict[str, Any]:
        return self._ok(self.request("GET", f"/system/function/{check_name(name)}"), 200).json()

    def metering(self, name: str) -> dict[str, Any] | None:
        """The local gateway's metering of a function (docs/metering.md); None from a gateway without it."""
        resp = self.request("GET", f"/system/metering/{check_name(name)}")
        try:
            return resp.json() if resp.status_code == 200 else None
        except ValueError:
            return None

    def scale(self, name: str, replicas: int) -> None:
        self._ok(self.request("POST", f"/system/scale-function/{check_name(name)}",
                              json={"serviceName": name, "replicas": replicas}), 200, 202)

    def deploy(self, body: dict[str, Any], update: bool = False) -> None:
        check_name(body.get("service", ""))
        self._ok(self.request("PUT" if update else "POST", "/system/functions", json=body), 200, 201, 202)

    def remove(self, name: str) -> None:
        self._ok(self.request("DELETE", "/system/functions", json={"functionName": check_name(name)}), 200, 202)

    def models(self) -> list[dict[str, Any]] | None:
        """Model cards of the gateway's store (`aigc up`'s /system/models); None from a gateway without it."""
        resp = self.request("GET", "/system/models")
        if resp.status_code in (404, 405, 501):
            return None
        body = self._ok(resp, 200).json()
        return body.get("models") if isinstance(body, dict) and isinstance(body.get("models"), list) else None

    def model(self, name: str) -> dict[str, Any]:
        if not MODEL.fullmatch(name or ""):
            raise GatewayError(400, f"{name!r} is not a model name")
        return self._ok(self.request("GET", f"/system/models/{name}"), 200).json()

    def secrets(self) -> list[dict[str, Any]]:
        return self._ok(self.request("GET", "/system/secrets"), 200).json()

    def write_secret(self, name: str, value: str, create: bool) -> None:
        self._ok(self.request("POST" if create else "PUT", "/system/secrets",
                              json={"name": name, "value": value}), 200, 201, 202)

    def delete_secret(self, name: str) -> None:
        self._ok(self.request("DELETE", "/system/secrets", json={"name": name}), 200, 202, 204)

    def logs(self, name: str, tail: int, since: str | None, follow: bool) -> requests.Response:
        """The function's log lines as OpenFaaS streams them (newline-delimited JSON); the caller closes it."""
        params = {"name": check_name(name), "tail": str(tail), "follow": "true" if follow else "false"}
        if since:
            params["since"] = since
        resp = self.request("GET", "/system/logs", params=params, stream=True,
                            timeout=(self.timeout, None) if follow else self.timeout)
        if resp.status_code != 200:
            try:
                raise GatewayError(resp.status_code, _message(resp))
            finally:
                resp.close()
        return resp

    def metrics_text(self) -> str:
        # /metrics is public on the local gateway; OpenFaaS serves it on a separate port in some installs,
        # so a failure here degrades the tables (no latency) instead of failing the page
        resp = self.request("GET", "/metrics", auth=False)
        return self._ok(resp, 200).text

    # --- /function ------------------------------------------------------------------
    def invoke(self, name: str, path: str, method: str = "POST", data: bytes | None = None,
               headers: dict[str, str] | None = None, stream: bool = False) -> requests.Response:
        """Call a function; the caller reads (and closes) the response. No gateway credentials are sent:
        /function/* needs none, and the gateway would pass them on to the function."""
        return self.request(method, f"/function/{check_name(name)}{path}", auth=False, data=data,
                            headers=headers or {}, stream=stream, timeout=self.invoke_timeout)

    def call(self, name: str, method: str, path: str, body: Any = None, token: str = "") -> Any:
        """A function's JSON route (e.g. finetune's /runs), its own error message on failure."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        resp = self.request(method, f"/function/{check_name(name)}{path}", auth=False, headers=headers,
                            json=body, timeout=self.invoke_timeout)
        if resp.status_code >= 300:
            raise GatewayError(resp.status_code, f"{name}: {_message(resp)}")
        try:
            return resp.json()
        except ValueError:
            raise GatewayError(502, f"{name} answered {path} with non-JSON: {resp.text[:200]}") from None

    def call_async(self, name: str, path: str, body: Any, token: str = "") -> str:
        """Queue a call (`/async-function/`): 202 and the call's id."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        resp = self._ok(self.request("POST", f"/async-function/{check_name(name)}{path}", auth=False,
                                     headers=headers, json=body), 202)
        return resp.headers.get("X-Call-Id", "")


def _reason(exc: requests.ConnectionError) -> str:
    text = str(exc)
    if "Connection refused" in text:
        return "connection refused"
    if "Name or service not known" in text or "Failed to resolve" in text:
        return "host name not found"
    return type(exc).__name__

"""Any function: send one fixed request to /function/NAME[PATH], expect a 2xx.

    python -m locust -f loadtests/generic.py --headless -H http://127.0.0.1:8080 \
        --function echo --request-path '/?sleep=0.1' --body ping -u 4 -t 30s

The CI tests drive tests/handlers/echo with it; it is also the quickest way
to load a function that has no locustfile of its own.
"""

from __future__ import annotations

from gateway_user import FunctionUser  # imports locust first
from locust import events


@events.init_command_line_parser.add_listener
def _options(parser):
    parser.add_argument("--method", env_var="LOCUST_METHOD", default="POST")
    parser.add_argument("--request-path", env_var="LOCUST_REQUEST_PATH", default="",
                        help="appended to /function/NAME, query included, e.g. '/v1/models' or '/?x=1'")
    parser.add_argument("--body", env_var="LOCUST_BODY", default="ping", help="request body (text)")
    parser.add_argument("--body-file", env_var="LOCUST_BODY_FILE", default="", help="request body from a file")
    parser.add_argument("--content-type", env_var="LOCUST_CONTENT_TYPE", default="application/octet-stream")


class GenericUser(FunctionUser):
    def on_start(self):
        super().on_start()
        opts = self.environment.parsed_options
        if not self.fn:
            raise SystemExit("generic.py needs --function NAME (or LOCUST_FUNCTION)")
        if opts.body_file:
            with open(opts.body_file, "rb") as fh:
                self.body = fh.read()
        else:
            self.body = opts.body.encode()

    def invoke(self, name: str) -> None:
        opts = self.environment.parsed_options
        with self.client.request(opts.method, f"/function/{self.fn}{opts.request_path}", data=self.body,
                                 headers={"Content-Type": opts.content_type}, name=name,
                                 catch_response=True) as resp:
            if not 200 <= resp.status_code < 300:
                resp.failure(f"HTTP {resp.status_code}: {resp.text[:200]}")

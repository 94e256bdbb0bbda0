"""Step load: users rise by --step-users every --step-seconds for --steps steps, then fall, then stop.

Add it to any function's locustfile with a comma:

    python -m locust -f loadtests/image_classify.py,loadtests/step_shape.py --headless -H URL

With the defaults (2 users a step, 15 s, 4 steps) the load is 2,4,6,8,6,4,2
users and the run ends by itself after 105 s.
"""

from __future__ import annotations

import gateway_user  # noqa: F401  (imports locust first and registers the --step-* options)
from locust import LoadTestShape


def level(elapsed: float, step_users: int, step_seconds: float, steps: int) -> int | None:
    """Users wanted `elapsed` seconds into the run; None once the ramp down is over."""
    index = int(elapsed // step_seconds)       # 0 .. 2*steps-2
    if index >= 2 * steps - 1:
        return None
    return step_users * (index + 1 if index < steps else 2 * steps - 1 - index)


class StepLoadShape(LoadTestShape):
    def tick(self):
        opts = self.runner.environment.parsed_options
        users = level(self.get_run_time(), opts.step_users, opts.step_seconds, opts.steps)
        if users is None:
            return None
        # spawn a whole step within a second so the plateau is at its level for nearly the whole step
        return users, max(1.0, float(opts.step_users))

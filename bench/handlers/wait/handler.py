"""A function that waits: `?seconds=S` (at most 60) and answers. The live keep-alive replay (aigc bench
policy --live) deploys it once per trace function, so replicas cost little and start fast."""

import time

from aigc.runtime import errors


def handle(event, context):
    try:
        seconds = float(event.query.get("seconds", "0"))
    except ValueError:
        raise errors.InvalidInput("seconds is a number, e.g. ?seconds=0.5") from None
    if not 0 <= seconds <= 60:
        raise errors.InvalidInput("seconds is from 0 to 60")
    time.sleep(seconds)
    return {"waited": seconds}

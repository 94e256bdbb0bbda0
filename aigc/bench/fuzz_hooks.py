"""schemathesis hooks for bench/fuzz.py (loaded through SCHEMATHESIS_HOOKS)."""

import schemathesis


@schemathesis.hook("filter_query")
def no_followed_logs(ctx, query):
    """A followed log stream lasts as long as its client does, by design: not a case for a request timeout."""
    return not (isinstance(query, dict) and str(query.get("follow", "")).lower() in ("true", "1"))

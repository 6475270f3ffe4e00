"""When and how long to wait before retrying an HTTP request (one policy for every client).

Both the asynchronous client of synthesis and the synchronous client of evaluation retry
429/5xx answers, timeouts and refused connections with jittered exponential backoff. A
server's ``Retry-After`` is honoured, but never past ``max_wait_s``: a server asking for
two minutes must not stall a stage whose requests time out after two seconds. Every wait,
Retry-After included, uses one attempt of the retry budget.
"""

from __future__ import annotations

import email.utils
import random
import time

#: statuses worth retrying: rate limited, or the server failed for now
RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def backoff_delay(
    attempt: int,
    *,
    base_s: float,
    max_backoff_s: float,
    retry_after: str | None = None,
    max_wait_s: float,
    jitter: bool = True,
) -> float:
    """The wait before retry number ``attempt`` (1 = the first retry)."""
    delay = min(max_backoff_s, base_s * 2 ** max(0, attempt - 1))
    if jitter:
        delay *= 0.5 + random.random() / 2
    asked = parse_retry_after(retry_after)
    if asked is not None:
        delay = max(delay, asked)
    return min(delay, max_wait_s)

"""Schemathesis hooks for Steward's API run (scripts/schemathesis.sh).

An `Idempotency-Key` names one create: the same key sent again with another body is refused
with 422 IDEMPOTENCY_KEY_REUSED, by design. Generated requests reuse the same few key values
("0", "a", ...) with different bodies, which the schema cannot rule out. Each generated key
that is valid is therefore made unique to its request; invalid keys are sent as generated,
so their rejection is still checked. Replays with one key are tested by the crates' own
tests.
"""

import re
import uuid

import schemathesis

VALID_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


def without_follow(case):
    """`follow=true` on the logs route streams until the client leaves: a generated request
    would hang. It is sent as `follow=false` (follows are tested by the crates' own tests and
    the end-to-end CLI test); every other parameter is sent as generated."""
    if case.path.endswith("/logs") and isinstance(case.query, dict) and "follow" in case.query:
        case.query["follow"] = "false"


@schemathesis.hook
def before_call(context, case, kwargs):
    without_follow(case)
    headers = case.headers or {}
    for name in list(headers):
        if name.lower() != "idempotency-key":
            continue
        key = headers[name]
        if isinstance(key, str) and VALID_KEY.match(key):
            headers[name] = f"{key[:222]}-{uuid.uuid4().hex}"


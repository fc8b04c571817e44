"""schemathesis hooks for scripts/fuzz-api (loaded through scripts/lib/schemathesis.toml)."""

import re
import uuid

import schemathesis

VALID_KEY = re.compile(r'^("[A-Za-z0-9._:-]{1,128}"|[A-Za-z0-9._:-]{1,128})$')  # as farol's OpenAPI document


@schemathesis.hook
def before_call(context, case, kwargs):
    """A fresh valid Idempotency-Key per request: schemathesis draws keys from a small space, and farol
    rightly refuses one key sent with different notes (422). A malformed key is sent as drawn."""
    key = (case.headers or {}).get("Idempotency-Key")
    if isinstance(key, str) and VALID_KEY.match(key):
        case.headers["Idempotency-Key"] = str(uuid.uuid4())

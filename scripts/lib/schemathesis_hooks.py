"""schemathesis hooks for scripts/fuzz-api (loaded through scripts/lib/schemathesis.toml)."""

import re
import uuid

import schemathesis

# the header's pattern in farol's OpenAPI document
VALID_KEY = re.compile(r'^("[A-Za-z0-9._:-]{1,128}"|[A-Za-z0-9._:-]{1,128})$')


@schemathesis.hook
def before_call(context, case, kwargs):
    """Makes a valid Idempotency-Key unique. schemathesis draws keys from a small space
    ("0", "00", ...), so it would send one key with different notes, which farol rightly
    refuses (422 idempotency-key-reused) although each request alone is valid. A fresh
    key keeps a valid request valid; a malformed key is sent as drawn."""
    key = (case.headers or {}).get("Idempotency-Key")
    if isinstance(key, str) and VALID_KEY.match(key):
        case.headers["Idempotency-Key"] = str(uuid.uuid4())

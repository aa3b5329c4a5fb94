"""Signs the contract run's admin in, gives them credits to spend, and prints the token."""

import json
import os
import sys
import urllib.request
import uuid

BASE = os.environ["HUB_BASE_URL"]


def call(method, path, body=None, token=None, headers=None):
    request = urllib.request.Request(BASE + path, method=method)
    request.add_header("content-type", "application/json")
    if token:
        request.add_header("authorization", f"Bearer {token}")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    data = json.dumps(body).encode() if body is not None else None
    with urllib.request.urlopen(request, data, timeout=30) as response:
        return json.load(response)


def main():
    email, password = sys.argv[1], sys.argv[2]
    signed_in = call("POST", "/api/auth/login", {"email": email, "password": password})
    token = signed_in["token"]
    call(
        "POST",
        "/api/admin/credits/grant",
        {"user_id": signed_in["user"]["id"], "amount_micros": 1_000_000_000, "reason": "contract tests"},
        token=token,
        headers={"idempotency-key": str(uuid.uuid4())},
    )
    print(token)


if __name__ == "__main__":
    main()

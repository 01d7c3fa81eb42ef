#!/usr/bin/env python3
"""An admin's access token with the second factor (admin actions need it): sign in,
enrol TOTP (setup + enable with the current code), sign in again and answer the
challenge with the next step's code (an enrolment code may not be replayed).

usage: admin_token.py API_URL EMAIL PASSWORD   (prints the token)
"""
import base64
import hashlib
import hmac
import json
import struct
import sys
import time
import urllib.request


def post(api, path, body=None, token=None):
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = "Bearer " + token
    data = json.dumps(body).encode() if body is not None else b""
    request = urllib.request.Request(api + "/api/v1" + path, data=data, method="POST", headers=headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        raw = response.read()
        return json.loads(raw) if raw else {}


def code_at(secret, at):
    key = base64.b32decode(secret.upper() + "=" * (-len(secret) % 8))
    digest = hmac.new(key, struct.pack(">Q", int(at) // 30), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    return "%06d" % ((struct.unpack(">I", digest[offset:offset + 4])[0] & 0x7FFFFFFF) % 1000000)


def main(api, email, password):
    credentials = {"email": email, "password": password}
    first = post(api, "/auth/login", credentials)["access_token"]
    secret = post(api, "/auth/2fa/setup", token=first)["secret"]
    now = time.time()
    post(api, "/auth/2fa/enable", {"code": code_at(secret, now)}, token=first)
    challenge = post(api, "/auth/login", credentials)["mfa_token"]
    session = post(api, "/auth/login/mfa", {"mfa_token": challenge, "code": code_at(secret, now + 30)})
    print(session["access_token"])


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])

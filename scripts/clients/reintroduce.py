"""A self-test of scripts/check-clients (CLIENTS_SELF_TEST=1): rewrites the saved
OpenAPI document (argument) to say again what it said before five contract fixes, so
that the clients are generated from a wrong document while the flows run against the
right server — each flow named below must then FAIL, which shows the check catches it:

  1. POST /auth/login's 200 is a TokenResponse only (with 2FA on it is an MfaChallenge)
     -> admin_2fa_login;
  2. the event stream's schema is the SSE wrapper {event, data: string}, not the data
     -> event_stream;
  3. /auth/refresh and /auth/logout declare neither X-Requested-With nor the refresh
     cookie -> login_refresh_logout (Python: no such arguments; TypeScript: typecheck
     and the cookie lookup);
  4. no `webhooks` (the request.finished event and its signature headers) -> webhook;
  5. the download is application/octet-stream with no schema, while the server sends
     the detected type -> upload_download.
"""

import json
import sys

path = sys.argv[1]
spec = json.load(open(path))
paths = spec["paths"]
schemas = spec["components"]["schemas"]

login = paths["/api/v1/auth/login"]["post"]["responses"]["200"]
login["content"]["application/json"]["schema"] = {"$ref": "#/components/schemas/TokenResponse"}

schemas["ProgressEvent"] = {
    "type": "object",
    "required": ["event", "data"],
    "properties": {
        "event": {"type": "string", "description": "Always `progress`."},
        "data": {"type": "string", "contentMediaType": "application/json"},
    },
}
events = paths["/api/v1/requests/{id}/events"]["get"]["responses"]["200"]
events["content"] = {"text/event-stream": {"schema": {"$ref": "#/components/schemas/ProgressEvent"}}}

for operation in ("refresh", "logout"):
    paths[f"/api/v1/auth/{operation}"]["post"].pop("parameters", None)

spec.pop("webhooks", None)

download = paths["/api/v1/uploads/{id}/content"]["get"]["responses"]["200"]
download["content"] = {"application/octet-stream": {}}

json.dump(spec, open(path, "w"), indent=1)
print("self-test: the document now has the five contract bugs back (scripts/clients/reintroduce.py)")

#!/usr/bin/env python3
"""A webhook receiver for IOC alert notifications, to adapt.

Checks the HMAC-SHA256 signature, ignores a repeated delivery (same
Idempotency-Key), and prints each change. Put your SMS or e-mail gateway
call where it says so. Standard library only.

    IOC_WEBHOOK_SECRET=a-long-random-shared-secret python3 deploy/webhook-receiver.py 8099

and in the ioc configuration:

    [alerts]
    webhooks = [{ name = "local", url = "http://127.0.0.1:8099/ioc", secret = "a-long-random-shared-secret" }]
"""

import hashlib
import hmac
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

SECRET = os.environ.get("IOC_WEBHOOK_SECRET", "").encode()
seen = set()  # a real receiver keeps this in its database


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        want = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(want, self.headers.get("X-IOC-Signature-256", "")):
            self.send_response(401)
            self.end_headers()
            return
        key = self.headers.get("Idempotency-Key")
        if key not in seen:
            seen.add(key)
            msg = json.loads(body)
            alert, change = msg["alert"], msg["change"]
            print(f"{change['action']:>12} {alert['severity']:>8} {alert['title_vi']} "
                  f"({alert['id']} v{alert['version']}, by {change['by']})", flush=True)
            # Send the SMS or e-mail here; answer non-2xx if it failed, and
            # the delivery is retried.
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    if not SECRET:
        sys.exit("set IOC_WEBHOOK_SECRET to the subscriber's secret")
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8099
    HTTPServer(("127.0.0.1", port), Handler).serve_forever()

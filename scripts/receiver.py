#!/usr/bin/env python3
"""A webhook receiver for trying Support RAG by hand.

Prints every delivery (type, id, attempt, the start of its data), verifies the X-Webhook-Signature
over the raw body, and answers 200 — or 500 while the file named by --fail-flag
exists, so a failure can be switched on and off from another terminal:

    python3 scripts/receiver.py --port 9000 --secret my_secret_key_12345
    touch /tmp/receiver-fail    # deliveries now fail
    rm /tmp/receiver-fail       # and succeed again
"""
import argparse
import hashlib
import hmac
import json
import os
from http.server import BaseHTTPRequestHandler, HTTPServer


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--secret", default="")
    parser.add_argument("--fail-flag", default="/tmp/receiver-fail")
    parser.add_argument("--show", type=int, default=400, help="characters of each event's data to print")
    args = parser.parse_args()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            timestamp = self.headers.get("X-Webhook-Timestamp", "")
            expected = "sha256=" + hmac.new(
                args.secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256
            ).hexdigest()
            verified = hmac.compare_digest(expected, self.headers.get("X-Webhook-Signature", ""))
            failing = os.path.exists(args.fail_flag)
            event = json.loads(body or b"{}")
            print(
                f"{event.get('event_type')} {event.get('event_id')} "
                f"attempt={self.headers.get('X-Delivery-Attempt')} "
                f"signature={'ok' if verified else 'BAD'} -> {500 if failing else 200}",
                flush=True,
            )
            data = json.dumps(event.get("data", {}), ensure_ascii=False)
            print(f"    data: {data[:args.show] + ('…' if len(data) > args.show else '')}", flush=True)
            self.send_response(500 if failing else 200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"status":"received"}')

        def log_message(self, *_):
            pass

    HTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()

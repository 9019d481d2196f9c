"""Calm Trader web API (sandbox stand-in): a standard-library HTTP server on 127.0.0.1:28000.

GET /health -> {"status": "ok"|"degraded", "version": ..., "database": bool}
GET /notes  -> {"count": N}
"""
import json
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg2

from common import DATABASE_URL, VERSION, log

HOST = os.environ.get("WEB_HOST", "127.0.0.1")
PORT = int(os.environ.get("WEB_PORT", "28000"))
DB_PROBE_TIMEOUT = 2.5  # seconds; /health never waits longer than this on the database


def query(sql):
    """One value from the database over TCP (the .env DATABASE_URL), bounded in time."""
    result = []

    def probe():
        try:
            conn = psycopg2.connect(DATABASE_URL, connect_timeout=2, options="-c statement_timeout=2000")
            try:
                with conn.cursor() as cur:
                    cur.execute(sql)
                    result.append(("ok", cur.fetchone()[0]))
            finally:
                conn.close()
        except Exception as exc:  # noqa: BLE001 - any failure means "not ok"
            log("web", f"database query failed: {type(exc).__name__}: {str(exc).strip()}")
            result.append(("error", None))

    worker = threading.Thread(target=probe, daemon=True)
    worker.start()
    worker.join(DB_PROBE_TIMEOUT)
    return result[0] if result else ("error", None)


class Handler(BaseHTTPRequestHandler):
    server_version = "calm-web"
    sys_version = ""

    def send_json(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802 - http.server naming
        path = self.path.split("?", 1)[0]
        if path == "/health":
            state, value = query("SELECT 1")
            db = state == "ok" and value == 1
            self.send_json(200, {"status": "ok" if db else "degraded", "version": VERSION, "database": db})
        elif path == "/notes":
            state, value = query("SELECT count(*) FROM notes")
            self.send_json(200 if state == "ok" else 503, {"count": value})
        else:
            self.send_json(404, {"error": "not found"})

    def log_message(self, fmt, *args):
        log("web", f"{self.address_string()} {fmt % args}")


def main():
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server = ThreadingHTTPServer((HOST, PORT), Handler)
    server.daemon_threads = True
    log("web", f"version {VERSION} listening on http://{HOST}:{PORT}")
    server.serve_forever()


if __name__ == "__main__":
    main()

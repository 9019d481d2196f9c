"""CalmTrader API (sandbox stand-in): a standard-library HTTP server.

GET /health  -> {"status": "ok"|"degraded", "version": ..., "database": bool}
GET /config  -> {"app_mode": APP_MODE}
"""
import datetime
import json
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg2

import settings

VERSION_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "VERSION")
with open(VERSION_FILE, encoding="utf-8") as f:
    VERSION = f.read().strip()

DB_PROBE_TIMEOUT = 2.5  # seconds; /health never waits longer than this on the database


def now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def log(message):
    print(f"{now()} api {message}", flush=True)


def database_ok():
    """SELECT 1 over TCP, bounded in time whatever state the server is in."""
    result = []

    def probe():
        try:
            conn = psycopg2.connect(
                settings.DATABASE_URL,
                connect_timeout=2,
                options="-c statement_timeout=2000",
            )
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT 1")
                    result.append(cur.fetchone()[0] == 1)
            finally:
                conn.close()
        except Exception as exc:  # noqa: BLE001 - any failure means "not ok"
            log(f"database check failed: {type(exc).__name__}: {str(exc).strip()}")
            result.append(False)

    worker = threading.Thread(target=probe, daemon=True)
    worker.start()
    worker.join(DB_PROBE_TIMEOUT)
    return bool(result and result[0])


class Handler(BaseHTTPRequestHandler):
    server_version = "calmtrader-api"
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
            db = database_ok()
            self.send_json(200, {"status": "ok" if db else "degraded", "version": VERSION, "database": db})
        elif path == "/config":
            self.send_json(200, {"app_mode": os.environ.get("APP_MODE")})
        elif path == "/":
            self.send_json(200, {"service": "api", "version": VERSION})
        else:
            self.send_json(404, {"error": "not found"})

    def log_message(self, fmt, *args):
        log(f"{self.address_string()} {fmt % args}")


def main():
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server = ThreadingHTTPServer((settings.HOST, settings.PORT), Handler)
    server.daemon_threads = True
    log(f"version {VERSION} listening on http://{settings.HOST}:{settings.PORT}")
    server.serve_forever()


if __name__ == "__main__":
    main()

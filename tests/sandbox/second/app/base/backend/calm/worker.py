"""Calm Trader worker (sandbox stand-in): keeps one database connection open and counts the
notes every two seconds, one line each time; reconnects when the connection breaks."""
import signal
import sys
import time

import psycopg2

from common import DATABASE_URL, VERSION, log


def main():
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    log("worker", f"starting version {VERSION}")
    conn = None
    beat = 0
    while True:
        beat += 1
        try:
            if conn is None or conn.closed:
                conn = psycopg2.connect(DATABASE_URL, connect_timeout=2)
                conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM notes")
                log("worker", f"beat {beat} version {VERSION} notes {cur.fetchone()[0]}")
        except Exception as exc:  # noqa: BLE001 - log, drop the connection, try again
            log("worker", f"beat {beat} version {VERSION} database error: {type(exc).__name__}: {str(exc).strip()}")
            try:
                if conn is not None:
                    conn.close()
            except Exception:  # noqa: BLE001
                pass
            conn = None
        time.sleep(2)


if __name__ == "__main__":
    main()

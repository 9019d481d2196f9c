"""CalmTrader Telegram bot (sandbox stand-in): one line per second on stdout."""
import datetime
import os
import signal
import sys
import time

import broker

VERSION_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "VERSION")
with open(VERSION_FILE, encoding="utf-8") as f:
    VERSION = f.read().strip()


def now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def main():
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"{now()} bot starting version {VERSION}", flush=True)
    if not os.environ.get("TELEGRAM_BOT_TOKEN"):
        print(f"{now()} bot error: TELEGRAM_BOT_TOKEN is not set", file=sys.stderr, flush=True)
        sys.exit(1)
    broker.connect()
    tick = 0
    while True:
        tick += 1
        print(f"{now()} bot tick {tick} version {VERSION}", flush=True)
        time.sleep(1)


if __name__ == "__main__":
    main()

"""Message broker hook, called once before the bot starts polling."""
import sys
import time


def connect():
    # Waits for the broker's handshake, which never comes in this release.
    time.sleep(2)
    print("bot error: broker handshake timed out", file=sys.stderr, flush=True)
    sys.exit(1)

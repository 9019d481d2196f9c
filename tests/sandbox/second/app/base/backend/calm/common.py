"""What web and worker share: the version, the log line format, the database URL."""
import datetime
import os

VERSION_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "VERSION")
with open(VERSION_FILE, encoding="utf-8") as f:
    VERSION = f.read().strip()

DATABASE_URL = os.environ.get("DATABASE_URL", "")


def now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def log(who, message):
    print(f"{now()} {who} {message}", flush=True)

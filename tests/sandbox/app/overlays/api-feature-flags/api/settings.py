"""Settings the API reads from its environment (infrastructure/.env) at start."""
import os

DATABASE_URL = os.environ.get("DATABASE_URL", "")
APP_MODE = os.environ.get("APP_MODE")
HOST = os.environ.get("API_HOST", "127.0.0.1")
PORT = int(os.environ.get("API_PORT", "18000"))

# Feature flags are fetched from a flag service at start.
FEATURE_FLAGS_URL = os.environ.get("FEATURE_FLAGS_URL")
if not FEATURE_FLAGS_URL:
    raise SystemExit("error: FEATURE_FLAGS_URL is not set; the API cannot start")

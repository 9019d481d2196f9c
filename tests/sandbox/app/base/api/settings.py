"""Settings the API reads from its environment (infrastructure/.env) at start."""
import os

DATABASE_URL = os.environ.get("DATABASE_URL", "")
APP_MODE = os.environ.get("APP_MODE")
HOST = os.environ.get("API_HOST", "127.0.0.1")
PORT = int(os.environ.get("API_PORT", "18000"))

"""Seeds the sandbox object store: buckets voice-messages and breathing-audio.

Usage: s3seed.py ENDPOINT   (credentials in MINIO_ROOT_USER / MINIO_ROOT_PASSWORD)
       s3seed.py --wait ENDPOINT SECONDS   (wait until a signed ListBuckets succeeds)
"""
import hashlib
import os
import sys
import time

import boto3
from botocore.config import Config

OBJECTS = {
    "voice-messages": [
        ("users/1/2026-01-10T08-00-00Z.ogg", "audio/ogg", {"user-id": "1"}),
        ("users/2/2026-01-11T07-15-00Z.ogg", "audio/ogg", {"user-id": "2"}),
        ("users/3/note 2026-01-11.ogg", "audio/ogg", {"user-id": "3"}),
    ],
    "breathing-audio": [
        ("box-breathing-4-4-4-4.mp3", "audio/mpeg", {"duration-s": "240"}),
        ("calm-4-7-8.mp3", "audio/mpeg", {"duration-s": "180"}),
    ],
}


def body(bucket, key):
    """Deterministic bytes, a few KiB per object."""
    seed = f"{bucket}/{key}".encode()
    out = b""
    while len(out) < 4096:
        seed = hashlib.sha256(seed).digest()
        out += seed
    return out


def client(endpoint):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=os.environ["MINIO_ROOT_USER"],
        aws_secret_access_key=os.environ["MINIO_ROOT_PASSWORD"],
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1},
                      connect_timeout=2, read_timeout=5),
    )


def wait(endpoint, seconds):
    s3 = client(endpoint)
    deadline = time.monotonic() + seconds
    while True:
        try:
            s3.list_buckets()
            return
        except Exception as exc:  # noqa: BLE001
            if time.monotonic() > deadline:
                sys.exit(f"s3 at {endpoint} not ready: {exc}")
            time.sleep(0.2)


def seed(endpoint):
    s3 = client(endpoint)
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    for bucket, objects in OBJECTS.items():
        if bucket not in existing:
            s3.create_bucket(Bucket=bucket)
        for key, content_type, metadata in objects:
            s3.put_object(Bucket=bucket, Key=key, Body=body(bucket, key),
                          ContentType=content_type, Metadata=metadata)


if __name__ == "__main__":
    if sys.argv[1] == "--wait":
        wait(sys.argv[2], float(sys.argv[3]))
    else:
        seed(sys.argv[1])

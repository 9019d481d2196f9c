"""Test helper: changes and reads buckets of an S3 server directly (not through ctops).

Usage: s3tool.py ENDPOINT apply       (JSON operations on stdin, one per line)
       s3tool.py ENDPOINT dump BUCKET...   (prints every object: sha256, type, metadata)

Operations: {"op": "bucket", "bucket": B}
            {"op": "put", "bucket": B, "key": K, "body": TEXT, "type": T, "meta": {...}}
            {"op": "fill", "bucket": B, "prefix": P, "count": N}   (N small objects)
            {"op": "delete", "bucket": B, "key": K}
Credentials: MINIO_ROOT_USER / MINIO_ROOT_PASSWORD, or placeholders (moto takes any).
"""
import concurrent.futures
import hashlib
import json
import os
import sys

import boto3
from botocore.config import Config


def client(endpoint):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=os.environ.get("MINIO_ROOT_USER", "test"),
        aws_secret_access_key=os.environ.get("MINIO_ROOT_PASSWORD", "test"),
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, max_pool_connections=16),
    )


def apply(s3):
    for line in sys.stdin:
        if not line.strip():
            continue
        op = json.loads(line)
        kind, bucket = op["op"], op["bucket"]
        if kind == "bucket":
            s3.create_bucket(Bucket=bucket)
        elif kind == "put":
            s3.put_object(Bucket=bucket, Key=op["key"], Body=op["body"].encode(),
                          ContentType=op.get("type", "binary/octet-stream"),
                          Metadata=op.get("meta", {}))
        elif kind == "delete":
            s3.delete_object(Bucket=bucket, Key=op["key"])
        elif kind == "fill":
            keys = [f'{op["prefix"]}{i:05d}' for i in range(op["count"])]
            with concurrent.futures.ThreadPoolExecutor(16) as pool:
                list(pool.map(lambda k: s3.put_object(Bucket=bucket, Key=k, Body=k.encode(),
                                                      ContentType="text/plain"), keys))
        else:
            sys.exit(f"unknown operation {kind}")


def dump(s3, buckets):
    out = {}
    for bucket in buckets:
        objects = {}
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                got = s3.get_object(Bucket=bucket, Key=item["Key"])
                objects[item["Key"]] = {
                    "sha256": hashlib.sha256(got["Body"].read()).hexdigest(),
                    "type": got.get("ContentType"),
                    "meta": got.get("Metadata", {}),
                }
        out[bucket] = objects
    json.dump(out, sys.stdout, sort_keys=True, ensure_ascii=False)


if __name__ == "__main__":
    s3 = client(sys.argv[1])
    if sys.argv[2] == "apply":
        apply(s3)
    else:
        dump(s3, sys.argv[3:])

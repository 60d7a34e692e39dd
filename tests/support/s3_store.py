"""How tests reach the S3-compatible server: boto3's standard variables only, with a secret no log may hold."""

from __future__ import annotations

SECRET = "s3-secret-6f1d2c9a"
"""The secret access key the tests use: distinctive, so a test can show it appears in no output."""


def aws_environ(endpoint: str) -> dict[str, str]:
    """The variables that point boto3's standard chain at `endpoint` and nothing else (no profile files, no
    instance metadata)."""
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": SECRET,
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": "/nonexistent",
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", "AWS_EC2_METADATA_DISABLED": "true"}

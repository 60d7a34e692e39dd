"""Refused access, against a real S3-compatible server on 127.0.0.1 that enforces IAM policies (moto's, in
its own process, with authentication on once the bucket and users exist): one line naming the bucket, key and
operation, exit 2, and nothing written to the folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3.session
import pytest

from tests.orchestrator.pipeline.media import write_shots
from tests.orchestrator.pipeline.runs import run, write_pipeline
from tests.support.s3_store import aws_environ

BUCKET = "guarded-videos"
SETUP_REQUESTS = 7
"""The requests the server takes before it checks credentials: the bucket, then per user (two) its creation,
policy and key."""
SERVE = ("from moto.server import ThreadedMotoServer\n"
         "server = ThreadedMotoServer(ip_address='127.0.0.1', port=0, verbose=False)\n"
         "server.start()\n"
         "print('%s:%s' % server.get_host_and_port(), flush=True)\n"
         "import sys; sys.stdin.read()\n")


def _policy(*statements: tuple[list[str], list[str]]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": actions, "Resource": [f"arn:aws:s3:::{r}" for r in resources]}
        for actions, resources in statements]})


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The server, its bucket holding one video under in/, and the environments of two users: `reader` may
    list the bucket and read in/ but write nowhere else; `lister` may only list."""
    server = subprocess.Popen([sys.executable, "-c", SERVE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(SETUP_REQUESTS)})
    try:
        endpoint = f"http://{server.stdout.readline().strip()}"  # type: ignore[union-attr]
        admin = boto3.session.Session(aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1")
        admin.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
        iam = admin.client("iam", endpoint_url=endpoint)
        policies = {"reader": _policy((["s3:ListBucket"], [BUCKET]),
                                      (["s3:GetObject", "s3:PutObject"], [f"{BUCKET}/in/*"])),
                    "lister": _policy((["s3:ListBucket"], [BUCKET]))}
        users = {}
        for name, policy in policies.items():
            iam.create_user(UserName=name)
            iam.put_user_policy(UserName=name, PolicyName="only", PolicyDocument=policy)
        for name in policies:
            key = iam.create_access_key(UserName=name)["AccessKey"]
            users[name] = {**aws_environ(endpoint), "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
                           "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}
        folder = tmp_path_factory.mktemp("guarded")
        write_shots(folder / "a.mp4", [(30, (200, 40, 40)), (30, (40, 200, 40))], size=(96, 64))
        reader = boto3.session.Session(aws_access_key_id=users["reader"]["AWS_ACCESS_KEY_ID"],
                                       aws_secret_access_key=users["reader"]["AWS_SECRET_ACCESS_KEY"],
                                       region_name="us-east-1").client("s3", endpoint_url=endpoint)
        reader.upload_file(str(folder / "a.mp4"), BUCKET, "in/a.mp4")
        yield {"users": users, "reader": reader}
    finally:
        server.stdin.close()  # type: ignore[union-attr]
        server.wait(timeout=30)


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def test_an_output_folder_the_credentials_may_not_write_is_one_line_and_holds_nothing(guarded, tmp_path) -> None:
    config, _ = write_pipeline(tmp_path, "denied", [f"s3://{BUCKET}/in/"])  # type: ignore[list-item]
    result = run(config, "--output", f"s3://{BUCKET}/out/", environ=guarded["users"]["reader"])
    assert result.returncode == 2
    line = _one_line(result.stderr)
    assert f"s3://{BUCKET}/out/.lock: access denied (PutObject" in line and "credentials" in line, line
    assert not guarded["reader"].list_objects_v2(Bucket=BUCKET, Prefix="out/").get("Contents")


def test_inputs_the_credentials_may_not_read_are_one_line_naming_the_object(guarded, tmp_path: Path) -> None:
    config, out = write_pipeline(tmp_path, "blind", [f"s3://{BUCKET}/in/"])  # type: ignore[list-item]
    result = run(config, environ=guarded["users"]["lister"])
    assert result.returncode == 2
    line = _one_line(result.stderr)
    assert f"s3://{BUCKET}/in/a.mp4: access denied (HeadObject" in line, line
    assert not (out / "metadata.jsonl").exists()

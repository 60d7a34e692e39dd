"""The quickstart pipeline over videos read in place from a local S3-compatible server, against the same videos
from local disk, measured in one run.

    --videos generated videos ─▶ execute(quickstart.yaml, inputs: the files)          local disk
                              ─▶ uploaded to moto_server (its own process, 127.0.0.1)
                              ─▶ execute(quickstart.yaml, inputs: s3://bench/in/)    through a counting hop
                              ─▶ execute(..., output: s3://bench/out/)         results into the bucket too
        clips/s after start-up of each ─▶ RATIO s3 / local clips/s, RATIO s3 -> s3 / local clips/s
        bytes the hop (tests/support/s3_link.py) passed from the server
            ─▶ RATIO bytes read per video / its size (no whole re-download)

The server shares this machine's cores with the run (it serves every ranged GET in Python), so the first
ratio is a floor for a real store, which costs this machine nothing.

    .venv/bin/python bench/s3.py [--videos 4] [--minutes 0.5] [--size 1280 720]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout, for the tests' counting hop

from pipeline import (  # noqa: E402
    PipelineRun,
    aws_environ,
    make_source,
    progress,
    run_pipeline,
    s3_server,
    scratch_dir,
)

from tests.support.s3_link import S3Link  # noqa: E402

BUCKET = "bench"


def with_grain(source: Any) -> None:
    """Re-encode the source's videos with a moving film grain, so they weigh what camera footage does (the
    generated flat shots compress to a few KB per second, and would make a container's header look big)."""
    first = source.paths[0]
    grainy = first.with_name("grainy.mp4")
    rng = np.random.default_rng(0)
    with av.open(str(first)) as src, av.open(str(grainy), "w") as dst:
        stream_in = src.streams.video[0]
        out = dst.add_stream("libx264", rate=stream_in.average_rate)
        out.width, out.height, out.pix_fmt = stream_in.width, stream_in.height, "yuv420p"
        grain = rng.integers(-10, 11, (stream_in.height, stream_in.width * 2, 3), dtype=np.int16)
        for index, frame in enumerate(src.decode(stream_in)):
            shift = index % stream_in.width
            rgb = np.clip(frame.to_ndarray(format="rgb24") + grain[:, shift:shift + stream_in.width], 0, 255)
            dst.mux(out.encode(av.VideoFrame.from_ndarray(rgb.astype(np.uint8), format="rgb24")))
        dst.mux(out.encode(None))
    for path in source.paths:
        shutil.copy(grainy, path)
    grainy.unlink()


def clips_per_s(run: PipelineRun) -> float:
    return run.clips / run.run_s


def run(videos: int, minutes: float, size: tuple[int, int]) -> None:
    import boto3.session

    load_before = os.getloadavg()[0]
    with scratch_dir() as scratch, s3_server() as upstream:
        progress(f"generating {videos} videos of {minutes:g} min")
        source = make_source(scratch / "videos", minutes, videos, size)
        with_grain(source)
        progress("local disk")
        local = run_pipeline(source, scratch / "out-local")
        os.environ.update(aws_environ(f"http://{upstream[0]}:{upstream[1]}"))
        client = boto3.session.Session().client("s3")
        client.create_bucket(Bucket=BUCKET)
        for path in source.paths:
            client.upload_file(str(path), BUCKET, f"in/{path.name}")
        relay = S3Link(f"http://{upstream[0]}:{upstream[1]}")  # counts what the server replies
        os.environ["AWS_ENDPOINT_URL"] = relay.endpoint  # the run's reads pass the relay, the upload did not
        progress("s3 inputs")
        urls = tuple(f"s3://{BUCKET}/in/{path.name}" for path in source.paths)
        remote = run_pipeline(dataclasses.replace(source, paths=urls), scratch / "out-s3")
        replied = relay.replied  # what reading the inputs cost, before results are written there too
        progress("s3 inputs, s3 output")
        both = run_pipeline(dataclasses.replace(source, paths=urls), f"s3://{BUCKET}/out/")  # type: ignore[arg-type]
        relay.close()
        sizes = sum(path.stat().st_size for path in source.paths)
        shutil.rmtree(scratch / "videos", ignore_errors=True)
    print(f"quickstart over {source.describe()} at {size[0]}x{size[1]} ({local.clips} clips)")
    for name, measured in (("local disk", local), ("s3 (moto_server)", remote), ("s3 -> s3", both)):
        print(f"  {name:<17} start-up {measured.startup_s:6.1f} s   {clips_per_s(measured):6.2f} clips/s after it")
    print(f"bytes from the server: {replied / 1e6:.2f} MB for {sizes / 1e6:.2f} MB of videos "
          f"(listing, HEADs and response headers included)")
    print(f"load average before / after: {load_before:.2f} / {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    print(f"RATIO s3 / local clips/s: {clips_per_s(remote) / clips_per_s(local):.2f}")
    print(f"RATIO bytes read per video / its size: {replied / sizes:.2f}")
    print(f"RATIO s3 -> s3 / local clips/s: {clips_per_s(both) / clips_per_s(local):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=4, help="input videos (default 4)")
    parser.add_argument("--minutes", type=float, default=0.5, help="length of each (default 0.5)")
    parser.add_argument("--size", type=int, nargs=2, default=(1280, 720), metavar=("W", "H"),
                        help="frame size of the generated videos (default 1280 720)")
    args = parser.parse_args()
    if args.videos < 1 or args.minutes * 60 < 3:
        parser.error("--videos must be at least 1, --minutes at least 0.05")
    run(args.videos, args.minutes, tuple(args.size))


if __name__ == "__main__":
    main()

"""Whether media workers decode on NVDEC and encode on NVENC: only where the run has a GPU and FFmpeg can
open them there, said once when a GPU is there but they cannot be used.

A build that lists the codecs may still lack the driver (or the GPU may not support them), so the probe
opens a tiny NVENC encoder in this process: no video is read.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction

import av
from av.codec.hwaccel import hwdevices_available

from workers.media.video import HW_DEVICE, HW_ENCODERS

HW_ENCODER = HW_ENCODERS["libx264"]


def use_hardware(setting: str, n_gpus: int, warn: Callable[[str], None]) -> bool:
    """Whether this run's media workers use the GPU's video engines (`media.hardware: auto` and it works)."""
    if setting == "off" or n_gpus == 0:
        return False
    problem = hardware_problem()
    if problem is not None:
        warn(f"media workers decode and encode on the CPU: the run has {n_gpus} GPU(s), but {problem} "
             f"(set media: {{hardware: off}} to silence this)")
    return problem is None


def hardware_problem() -> str | None:
    """Why NVDEC/NVENC cannot be used here, or None when they can."""
    if HW_DEVICE not in hwdevices_available() or HW_ENCODER not in av.codecs_available:
        return f"this FFmpeg build has no {HW_DEVICE} device or {HW_ENCODER} encoder"
    try:
        context = av.CodecContext.create(HW_ENCODER, "w")
        context.width, context.height, context.pix_fmt = 256, 256, "yuv420p"
        context.time_base = Fraction(1, 25)
        context.open()
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        return f"FFmpeg cannot open {HW_ENCODER} here ({exc})"
    return None

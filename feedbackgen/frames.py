"""Recorded frames: small RGB pictures of an episode, for people who label segments.

``feedbackgen collect --record-frames K`` renders every K-th step of every episode with
PyBullet's CPU renderer (``getCameraImage`` with ``ER_TINY_RENDERER`` on the DIRECT connection the
simulator already uses; no display or GPU needed), through the task's own camera (for the Run
tasks it follows the agent), at 2× the frame size, then averages 2×2 blocks down to ``size`` ×
``size`` pixels. Frames go to a sidecar next to the DSRL file, so the DSRL file itself stays
exactly the DSRL layout:

    <stem>.frames.hdf5      (``data.hdf5`` -> ``data.frames.hdf5``)
        index   (F,) int64            transition index each frame shows (strictly increasing)
        images  (F, size, size, 3) uint8, gzip-compressed, one frame per chunk
        attrs   every, size, renderer, camera, data_sha256 (SHA-256 of the DSRL file it belongs to)

``feedbackgen make`` copies the frames that fall inside the store's segments into the store's
optional ``frames/`` group (:func:`frames_for_store`), and ``feedbackgen annotate`` animates them.
Only bullet-safety-gym tasks can be recorded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from feedbackgen._io import atomic_path
from feedbackgen.errors import FeedbackgenError

FRAMES_SUFFIX = ".frames.hdf5"
DEFAULT_FRAME_SIZE = 64
_SUPERSAMPLE = 2


def frames_path_for(source: str | Path) -> Path:
    """The frames sidecar of a DSRL file: ``x.hdf5`` -> ``x.frames.hdf5`` in the same folder."""
    source = Path(source)
    return source.with_name(source.stem + FRAMES_SUFFIX)


def render_frame(env: Any, size: int = DEFAULT_FRAME_SIZE) -> np.ndarray:
    """One (size, size, 3) uint8 picture of a bullet-safety-gym env through the task's camera.

    Args:
        env: a :class:`feedbackgen.sim.SafeEnv` of the ``bullet`` family, after ``reset``.
        size: frame width and height in pixels.

    Raises:
        FeedbackgenError: the env is not a bullet-safety-gym env.
    """
    import pybullet

    gym_env = getattr(getattr(env, "_backend", None), "env", None)
    inner = getattr(gym_env, "unwrapped", None)
    if (getattr(env, "family", None) != "bullet" or inner is None or not hasattr(inner, "bc")
            or not hasattr(inner, "world")):
        raise FeedbackgenError(f"--record-frames renders bullet-safety-gym tasks only, not "
                               f"{getattr(env, 'env_id', env)}; collect without --record-frames")
    bc, cam = inner.bc, inner.world.camera
    view = bc.computeViewMatrixFromYawPitchRoll(cameraTargetPosition=cam.cam_base_pos, distance=cam.cam_dist,
                                                yaw=cam.cam_yaw, pitch=cam.cam_pitch, roll=0, upAxisIndex=2)
    proj = bc.computeProjectionMatrixFOV(fov=60, aspect=1.0, nearVal=0.1, farVal=100.0)
    big = int(size) * _SUPERSAMPLE
    _, _, px, _, _ = bc.getCameraImage(width=big, height=big, viewMatrix=view, projectionMatrix=proj,
                                       renderer=pybullet.ER_TINY_RENDERER)
    rgb = np.reshape(np.asarray(px, dtype=np.uint8), (big, big, 4))[:, :, :3].astype(np.float32)
    small = rgb.reshape(size, _SUPERSAMPLE, size, _SUPERSAMPLE, 3).mean(axis=(1, 3))
    return np.rint(small).astype(np.uint8)


def write_frames(path: str | Path, index: np.ndarray, images: np.ndarray, attrs: dict[str, Any]) -> Path:
    """Write a frames sidecar atomically (temporary sibling, then rename).

    Raises:
        FeedbackgenError: index and images disagree, or the index is not strictly increasing.
    """
    import h5py

    path = Path(path)
    index = np.asarray(index, dtype=np.int64)
    images = np.asarray(images, dtype=np.uint8)
    if images.ndim != 4 or images.shape[0] != index.shape[0] or images.shape[3] != 3:
        raise FeedbackgenError(f"frames: {images.shape} images for {index.shape[0]} indices; "
                               "expected (F, h, w, 3)")
    if index.size and not (np.diff(index) > 0).all():
        raise FeedbackgenError("frames: the transition index must be strictly increasing")
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("index", data=index)
        chunks = (1,) + images.shape[1:] if images.shape[0] else None
        f.create_dataset("images", data=images, chunks=chunks, compression="gzip" if chunks else None,
                         compression_opts=4 if chunks else None)
        for k, v in attrs.items():
            f.attrs[k] = v
    return path


def frames_for_store(source: str | Path, source_sha256: str, segment_start: np.ndarray,
                     segment_length: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[str, Any]] | None:
    """The frames of a source's sidecar that fall inside any segment, for a store's ``frames/`` group.

    Args:
        source: the DSRL file the store is made from.
        source_sha256: its SHA-256; a sidecar recorded for another file is ignored.
        segment_start, segment_length: the store's segment table (global transition indices).

    Returns:
        ``(index, images, info)`` or None when there is no matching sidecar. ``info`` goes into the
        store's metadata (``frames``: file, every, size, count).
    """
    import h5py

    path = frames_path_for(source)
    if not path.is_file():
        return None
    try:
        f = h5py.File(path, "r")
    except OSError:
        return None
    with f:
        if str(f.attrs.get("data_sha256", "")) != source_sha256:
            return None
        index = np.asarray(f["index"][...], dtype=np.int64)
        covered = np.zeros(index.size, dtype=bool)
        starts = np.asarray(segment_start, dtype=np.int64)
        ends = starts + np.asarray(segment_length, dtype=np.int64)
        if index.size and starts.size:
            # a frame is kept when some segment [start, end) contains it: sweep over sorted intervals
            order = np.argsort(starts, kind="stable")
            s, e = starts[order], np.maximum.accumulate(ends[order])
            k = np.searchsorted(s, index, side="right") - 1
            covered = (k >= 0) & (index < e[np.maximum(k, 0)])
        keep = np.flatnonzero(covered)
        images = np.asarray(f["images"][keep] if keep.size else
                            np.zeros((0,) + f["images"].shape[1:], np.uint8), dtype=np.uint8)
        info = {"file": path.name, "every": int(f.attrs.get("every", 0)), "size": list(images.shape[1:3]),
                "count": int(keep.size), "renderer": str(f.attrs.get("renderer", "")),
                "camera": str(f.attrs.get("camera", ""))}
    return index[keep], images, info


def attach_frames(data: Any, source: str | Path, source_sha256: str) -> bool:
    """Put the source sidecar's frames of ``data``'s segments into ``data`` (``frame_index``,
    ``frame_images``, ``metadata['frames']``). Returns whether there were any."""
    found = frames_for_store(source, source_sha256, np.asarray(data.segment_start),
                             np.asarray(data.segment_length))
    if found is None or found[0].size == 0:
        return False
    data.frame_index, data.frame_images, info = found
    data.metadata = {**data.metadata, "frames": info}
    return True

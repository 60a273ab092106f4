"""A rendered rollout as a video file (optional extra ``video``: imageio with its bundled ffmpeg).

Frames come from ``env.render()`` with ``render_mode="rgb_array"``: Maze draws itself in numpy, DM Control
renders with MuJoCo offscreen (``MUJOCO_GL=egl`` by default, or ``osmesa``), both on the CPU.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from spinrl.errors import MissingExtraError, SpinError


def _imageio() -> Any:
    try:
        import imageio.v2 as imageio
        import imageio_ffmpeg  # noqa: F401  (the mp4 writer; imageio alone has none)
    except ImportError as e:
        raise MissingExtraError(getattr(e, "name", None) or "imageio", "video") from None
    return imageio


def check_video_path(path: str | os.PathLike) -> Path:
    """The video path, checked before any rollout: ``.mp4``, its folder exists, imageio is installed."""
    p = Path(path)
    if p.suffix.lower() != ".mp4":
        raise SpinError(f"--video {path}: write an .mp4 file (e.g. --video rollout.mp4)")
    if not p.parent.is_dir():
        raise SpinError(f"--video {path}: folder {p.parent} does not exist; create it or choose another path")
    if p.is_dir():
        raise SpinError(f"--video {path} is a directory; name a file such as {p / 'rollout.mp4'}")
    _imageio()
    return p


def _frame(env: Any) -> np.ndarray:
    f = env.render()
    if not isinstance(f, np.ndarray) or f.ndim != 3 or f.shape[2] not in (3, 4):
        got = type(f).__name__ if not isinstance(f, np.ndarray) else f"shape {f.shape}"
        raise SpinError(
            f"env.render() returned {got}, not an RGB frame [H, W, 3]; make the env with render_mode='rgb_array'"
        )
    return np.ascontiguousarray(f[..., :3], dtype=np.uint8)


def record_video(
    env: Any, act: Callable[[np.ndarray], np.ndarray], seed: int, path: str | os.PathLike, max_steps: int | None = None
) -> dict:
    """Roll out one episode (reset with ``seed``) and write its frames, the first after reset, to ``path``.

    An env stepping faster than 30 Hz (DM Control: 100 Hz or more) is drawn every k-th step, at its
    ``metadata["render_fps"] / k`` frames per second (real time, k = round(render_fps / 30)): rendering is
    the slow part on a CPU.

    Args:
        env: a Gymnasium env made with ``render_mode="rgb_array"``.
        act: batched policy, obs [B, obs_dim] -> actions [B, N] (called with B = 1).
        seed: the episode's reset seed.
        path: the ``.mp4`` to write (replaced atomically: a failed rollout leaves no partial file).
        max_steps: stop the episode after this many steps (None: until it ends).

    Returns:
        ``{"path", "frames", "fps", "steps", "return", "seed"}`` of the recorded episode.
    """
    imageio = _imageio()
    path = check_video_path(path)
    step_fps = float(env.metadata.get("render_fps") or 30)
    every = max(1, round(step_fps / 30))
    fps = step_fps / every
    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
    frames, steps, ret = 0, 0, 0.0
    try:
        # macro_block_size=2: yuv420p (plays everywhere) needs even sizes; odd ones are padded
        with imageio.get_writer(tmp, fps=fps, codec="libx264", macro_block_size=2, pixelformat="yuv420p") as w:
            obs, _ = env.reset(seed=int(seed))
            w.append_data(_frame(env))
            frames = 1
            while True:
                a = np.asarray(act(np.asarray(obs, dtype=np.float32).reshape(1, -1)))[0]
                obs, r, te, tr, _ = env.step(a)
                ret += float(r)
                steps += 1
                end = te or tr or (max_steps is not None and steps >= max_steps)
                if steps % every == 0 or end:
                    w.append_data(_frame(env))
                    frames += 1
                if end:
                    break
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return {"path": str(path), "frames": frames, "fps": fps, "steps": steps, "return": ret, "seed": int(seed)}

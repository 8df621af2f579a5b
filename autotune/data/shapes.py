"""``shapes``: a labelled 3x32x32 image data set drawn locally, for CIFAR-sized searches offline.

Ten classes of filled or outlined shapes (circle, square, triangle, half disc, hexagon, ring, plus,
star, ellipse, frame), each image with its own position, size, rotation, foreground and background
colour, a background gradient, one distractor stroke and pixel noise. Nothing is downloaded: the
same seed draws the same images on every machine. Telling a hexagon from a circle at
32 pixels under noise takes a real convolutional network, so accuracy separates architectures and
training settings (a linear model on the pixels stays near chance).
"""

from __future__ import annotations

import numpy as np

CLASSES = ("circle", "square", "triangle", "half-disc", "hexagon", "ring", "plus", "star", "ellipse", "frame")
SIZE = 32


def _polygon(r: np.ndarray, a: np.ndarray, n: int) -> np.ndarray:
    """Inside a regular ``n``-gon of circumradius 1 (polar coordinates ``r``, ``a``)."""
    sector = 2 * np.pi / n
    return r * np.cos(np.mod(a, sector) - sector / 2) <= np.cos(np.pi / n)


def _masks(ux: np.ndarray, uy: np.ndarray, label: np.ndarray) -> np.ndarray:
    """Per image, the pixels inside its class's shape, in shape coordinates ``ux``, ``uy``."""
    r, a = np.hypot(ux, uy), np.arctan2(uy, ux)
    box = np.maximum(np.abs(ux), np.abs(uy))
    shapes = [
        r <= 1.0,
        box <= 0.8,
        _polygon(r, a, 3),
        (r <= 1.0) & (uy >= -0.1),
        _polygon(r, a, 6),
        (r <= 1.0) & (r >= 0.6),
        ((np.abs(ux) <= 0.3) & (np.abs(uy) <= 1.0)) | ((np.abs(uy) <= 0.3) & (np.abs(ux) <= 1.0)),
        r <= 0.55 + 0.4 * np.cos(5 * a),
        ux**2 + (uy / 0.45) ** 2 <= 1.0,
        (box <= 0.85) & (box >= 0.55),
    ]
    out = np.zeros(ux.shape, dtype=bool)
    for k, m in enumerate(shapes):
        out |= m & (label == k)[:, None, None]
    return out


def draw(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images (float32, ``(n, 3, 32, 32)``, roughly in [0, 1]) and their labels, balanced."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % len(CLASSES)).astype(np.int64)
    grid = (np.arange(SIZE, dtype=np.float32) + 0.5) / SIZE * 2 - 1
    px, py = grid[None, None, :], grid[None, :, None]
    cx, cy = (rng.uniform(-0.3, 0.3, (2, n, 1, 1))).astype(np.float32)
    scale = rng.uniform(0.45, 0.8, (n, 1, 1)).astype(np.float32)
    theta = rng.uniform(0, 2 * np.pi, (n, 1, 1)).astype(np.float32)
    dx, dy = px - cx, py - cy
    ux = (np.cos(theta) * dx + np.sin(theta) * dy) / scale
    uy = (-np.sin(theta) * dx + np.cos(theta) * dy) / scale
    inside = _masks(ux, uy, y)
    # colours: background and foreground at least 0.5 apart (Euclidean, RGB in [0, 1])
    bg = rng.uniform(0, 1, (n, 3)).astype(np.float32)
    fg = rng.uniform(0, 1, (n, 3)).astype(np.float32)
    close = np.linalg.norm(fg - bg, axis=1) < 0.5
    fg[close] = np.where(bg[close] < 0.5, bg[close] + 0.5, bg[close] - 0.5)
    gx, gy = rng.uniform(-0.25, 0.25, (2, n, 1, 1, 1)).astype(np.float32)
    img = bg[:, :, None, None] + gx * px[:, None] + gy * py[:, None]
    img = np.where(inside[:, None], fg[:, :, None, None], img)
    # one distractor stroke: a line of random colour crossing the image
    phi = rng.uniform(0, np.pi, (n, 1, 1)).astype(np.float32)
    off = rng.uniform(-0.8, 0.8, (n, 1, 1)).astype(np.float32)
    line = np.abs(np.cos(phi) * px + np.sin(phi) * py - off) <= 1.0 / SIZE
    ink = rng.uniform(0, 1, (n, 3)).astype(np.float32)
    img = np.where(line[:, None], ink[:, :, None, None], img)
    img += rng.normal(0, 0.05, img.shape).astype(np.float32)
    return np.clip(img, -0.2, 1.2).astype(np.float32), y

"""Write a small image folder for ``space.yaml``: three classes of 24x24 RGB pictures, 80 each.

    python examples/image_folder/make_images.py [--out examples/image_folder/data] [--per-class 80]

Classes: ``bars`` (horizontal stripes), ``columns`` (vertical stripes), ``blob`` (a bright disc),
each with random colours, positions, widths and noise, saved as PNG in one sub-folder per class,
the layout ``task.data: {images: folder}`` reads. The pictures are generated, not committed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image


def picture(kind: str, rng: np.random.Generator, size: int = 24) -> np.ndarray:
    img = rng.normal(40, 20, (size, size, 3))
    colour = rng.uniform(120, 255, 3)
    yy, xx = np.mgrid[:size, :size]
    period, phase = rng.integers(4, 8), rng.integers(0, 8)
    if kind == "bars":
        mask = (yy + phase) % period < period // 2
    elif kind == "columns":
        mask = (xx + phase) % period < period // 2
    else:
        cy, cx, r = rng.uniform(6, size - 6, 2).tolist() + [rng.uniform(3, 7)]
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
    img[mask] = colour
    return np.clip(img, 0, 255).astype(np.uint8)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "data")
    p.add_argument("--per-class", type=int, default=80)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    rng = np.random.default_rng(args.seed)
    for kind in ("bars", "columns", "blob"):
        folder = args.out / kind
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(args.per_class):
            Image.fromarray(picture(kind, rng)).save(folder / f"{i:03d}.png")
    print(f"wrote {3 * args.per_class} images to {args.out}")


if __name__ == "__main__":
    main()

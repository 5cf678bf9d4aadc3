"""``python launch.py``: the GenFusion Studio app (Gradio UI + live viser viewer).

The app itself arrives with the issue "the app"; until then this prints what it will do.
"""

from __future__ import annotations

from pathlib import Path

DEMO_SCENE = Path(__file__).resolve().parent / "assets" / "demo" / "fox"


def main() -> None:
    print("GenFusion Studio")
    print("  The Gradio app and the viser viewer are not built yet. When they are, this will:")
    print("  1. serve a Gradio page to upload a capture (COLMAP, transforms.json, LLFF, photos or video)")
    print("  2. stream the Gaussians live in a viser viewer while fusion runs")
    print("  3. offer .ply / .splat / mesh / video downloads")
    print(f"  Demo scene: {DEMO_SCENE}")
    print("  Meanwhile, the library runs headless:  genfusion --help")


if __name__ == "__main__":
    main()

"""Launcher of the FSLoRA person-search app (Gradio UI in app/ui.py); also the Hugging Face Space entry.

    python app.py                                  # http://127.0.0.1:7860, data in ./data
    python app.py --host 0.0.0.0 --port 8080 --data-dir /srv/fslora --model org/fslora-nano --revision v1

On a fresh machine the app opens with the bundled checkpoint (or, until one is bundled, a clearly
labelled untrained nano model saved in the data folder) and indexes a demo video in the background.
Gradio's upload/cache folder is put inside the data folder before gradio is imported, so every file
the app serves lives there.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    on_space = bool(os.environ.get("SPACE_ID"))
    parser = argparse.ArgumentParser(description="FSLoRA person search: find a person across videos")
    parser.add_argument("--host", default="0.0.0.0" if on_space else "127.0.0.1",
                        help="interface to listen on (0.0.0.0 = every interface)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", 7860)))
    parser.add_argument("--data-dir", default=os.environ.get("FSLORA_DATA_DIR", "data"),
                        help="database, indexes, uploaded and demo videos")
    parser.add_argument("--model", default=None,
                        help="checkpoint folder or Hugging Face Hub repo id (default: bundled checkpoint)")
    parser.add_argument("--revision", default=None, help="Hub revision of --model (branch, tag or commit)")
    parser.add_argument("--config", default=None, help="AppConfig YAML (see configs/app.yaml)")
    parser.add_argument("--share", action="store_true", help="also serve through a public gradio.live link")
    parser.add_argument("--demo", choices=("all", "synth", "none"), default="all",
                        help="demo videos indexed at launch: SynthPS + vtest.avi (all), SynthPS only, none")
    parser.add_argument("--max-upload-mb", type=int, default=500, help="largest accepted upload, MB")
    parser.add_argument("--display-max-side", type=int, default=960,
                        help="frames are shown downscaled to this many pixels on their longer side")
    desktop = parser.add_mutually_exclusive_group()
    desktop.add_argument("--desktop", dest="desktop", action="store_true", default=not on_space,
                         help="allow indexing a local folder by path (default off on a Space)")
    desktop.add_argument("--no-desktop", dest="desktop", action="store_false")
    args = parser.parse_args(argv)
    for name in ("max_upload_mb", "display_max_side"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.share:
        args.desktop = False  # a public link must not browse the server's disk
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("GRADIO_TEMP_DIR", str((Path(args.data_dir) / "gradio-cache").resolve()))
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from fslora.utils.cpu_memory import keep_freed_memory  # noqa: PLC0415

    keep_freed_memory()  # big CPU tensors reuse freed heap instead of page-faulting (see the module)
    from app.ui import launch  # noqa: PLC0415  (imports gradio: after GRADIO_TEMP_DIR is set)

    return launch(args)


if __name__ == "__main__":
    sys.exit(main())

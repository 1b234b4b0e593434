"""Launcher of the FSLoRA person-search app.

The Gradio UI (app/ui.py) is not built yet; until it is, this launcher reports what is installed and
what it will do, and exits 0 so that the README's first command works on a fresh machine.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="FSLoRA person search: find a person across videos")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--model", default="weights/fslora-nano-synthps")
    args = parser.parse_args(argv)
    if importlib.util.find_spec("app.ui") is None:
        print(
            "FSLoRA person search\n"
            "  The video search UI is not part of this version yet. When it is, this command will\n"
            f"  serve it on http://{args.host}:{args.port} with the model '{args.model}' and data in\n"
            f"  '{args.data_dir}'. Today the library (fslora/) is usable from Python; see README.md."
        )
        return 0
    from app.ui import launch  # noqa: PLC0415  (heavy import only when the UI exists)

    return launch(args)


if __name__ == "__main__":
    sys.exit(main())

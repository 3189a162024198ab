"""Render a trained avatar speaking new audio (predict.sh) or replaying its val split (render_direct.sh)."""

from scene.predict_cli import build_parser, main
from utils.cli import run_cli

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    run_cli(main)

"""Train an audio-driven Gaussian avatar: ./train.sh -s data/<subject> --model_path OUT [--iterations N]."""

from scene.train_cli import main
from utils.cli import run_cli

__all__ = ["main"]

if __name__ == "__main__":
    run_cli(main)

"""Many subjects at once: preprocess, train and render_direct every video as Ray tasks (./train_many.sh).

Python API: `run_many(ManyConfig(videos=[...], out=Path("runs")))` returns one report row per subject."""

from many.driver import ManyConfig, run_many

__all__ = ["ManyConfig", "run_many"]

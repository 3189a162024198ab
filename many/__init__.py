"""Many subjects at once: preprocess, train and render_direct every video as Ray tasks (./train_many.sh).

Python API: `from many.driver import ManyConfig, run_many`, then
`run_many(ManyConfig(videos=[...], out=Path("runs")))` returns one report row per subject. The package itself
imports nothing, so `many.stages` (which bench.ab uses) works where Ray is not installed."""

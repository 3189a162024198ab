"""One-question diagnostics, kept apart from the benchmarks of bench/: each answers one question about the
code or a trained model (do the two rasterizers agree? where does a model's error lie? where does a training
step's time go? how fast is the rasterizer alone? does the lip-sync score tell a clip's own audio from other
speech?) rather than measuring the pipeline at its defaults. Run as `python -m bench.diagnostics.NAME`; their
JSON reports carry the same metadata (bench.report). docs/benchmarks.md lists them."""

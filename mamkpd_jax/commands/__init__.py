"""The `mamkpd` subcommands, one module each (mamkpd_jax.cli dispatches to them).

Each module has a `define_flags()` (called by the cli for the chosen command only, so
the commands' flags never meet), a `main(argv)` that reads the parsed flags, and plain
functions that do the work and can be called from Python (predict.predict,
export.export, track.run, convert.convert_checkpoint, train.run). main.py is
`mamkpd train`.
"""

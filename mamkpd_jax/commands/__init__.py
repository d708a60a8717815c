"""The `mamkpd` subcommands, one module each (mamkpd_jax.cli dispatches to them).

Each module defines its absl flags when imported and a `main(argv)` for `app.run`; only
the chosen command's module is imported, so their flags never meet. scripts/*.py and
main.py are thin wrappers over the same modules (same flags).
"""

"""The application layer between the library and its callers (DESIGN.md "workflows/").

So far: :mod:`mofdft_jax.workflows.landscape`, the diagnostics of a learned energy at the KS
density (is p* a minimum of it, how far does the solver end from it).
"""

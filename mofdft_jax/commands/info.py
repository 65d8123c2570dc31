"""``mofdft info``: versions, devices and numerical settings of this installation."""

from __future__ import annotations

import os
import platform

import typer

from mofdft_jax.commands.output import echo_json


def collect_environment_info() -> dict:
    """Versions of the scientific stack (ASE included: the calculator of
    :mod:`mofdft_jax.ase_calculator`), JAX devices, float64 state and thread settings."""
    from importlib import metadata

    import jax

    from mofdft_jax._version import __version__

    def version(pkg):
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return None

    packages = ["jax", "jaxlib", "equinox", "optax", "pyscf", "rdkit", "numpy", "scipy", "h5py",
                "pandas", "dask", "ase", "gpu4pyscf-cuda12x", "cupy-cuda12x"]
    return {
        "mofdft_jax": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "packages": {p: version(p) for p in packages if version(p) is not None},
        "jax_backend": jax.default_backend(),
        "jax_devices": [str(d) for d in jax.devices()],
        "jax_enable_x64": bool(jax.config.read("jax_enable_x64")),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }


def info(json_output: bool = typer.Option(False, "--json", help="Print JSON on stdout.")):
    """Show versions, JAX devices and the float64 setting of this installation."""
    data = collect_environment_info()
    if json_output:
        echo_json("info", data)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"mofdft_jax {data['mofdft_jax']}", show_header=False)
    for key in ("python", "platform", "cpu_count", "jax_backend", "jax_devices", "jax_enable_x64",
                "omp_num_threads"):
        table.add_row(key, str(data[key]))
    for pkg, ver in data["packages"].items():
        table.add_row(pkg, ver)
    Console().print(table)

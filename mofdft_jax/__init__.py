"""mofdft_jax: machine-learned orbital-free DFT (M-OFDFT) for molecules, in JAX.

Reference: H. Zhang et al., "Overcoming the barrier of orbital-free density functional theory for
molecular systems using deep learning", Nat. Comput. Sci. 4, 210-223 (2024); arXiv:2309.16578.

Layers (see README, "Design"):

* host world (NumPy, PySCF, RDKit, files): ``molecules``, ``qchem``, ``data``, ``bench``, ``cli``;
* device world (pure JAX functions of explicit pytrees, float64 by default): ``functionals``,
  ``density``, ``model``, ``train``, ``solver``.

Host layers may import device layers; device layers never import host layers. Importing this
package never changes global JAX configuration; entry points call :func:`enable_x64` and library
drivers call :func:`ensure_x64`.
"""

from mofdft_jax._version import __version__
from mofdft_jax.config import enable_x64, ensure_x64

__all__ = ["__version__", "enable_x64", "ensure_x64"]

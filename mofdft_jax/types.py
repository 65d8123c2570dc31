"""jaxtyping aliases used across the package (single source).

Dimension names: ``naux`` density-basis functions, ``natm`` atoms, ``nblk`` grid blocks, ``blk``
points per block, ``nsig`` significant basis functions per block, ``nslot`` per-atom slots.
"""

from __future__ import annotations

from jaxtyping import Array, Float, Int, Bool

Scalar = Float[Array, ""]

__all__ = ["Array", "Float", "Int", "Bool", "Scalar"]

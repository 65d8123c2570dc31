"""Device layer: the density adapter of M-OFDFT (spec §2).

Local frames and real Wigner-D rotations (:mod:`.frames`, :mod:`.wigner`), natural
reparametrisation with the symmetric square root of the overlap, the 477-slot per-atom layout,
per-(element, slot) centring and scaling, AtomRef and the training-set statistics
(:mod:`.adapter`).
"""

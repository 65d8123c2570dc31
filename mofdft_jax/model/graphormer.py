"""Graphormer-3D network of M-OFDFT in equinox (spec §3.1, §3.2, §2.5; release ``model.py``).

One molecule, padded to ``natm`` atoms (atomic number 0 marks padding), goes in as

* ``atom_numbers`` ``(natm,)``, ``coords`` ``(natm, 3)`` in Bohr, and
* ``coeffs`` ``(natm, 477)``: the processed coefficients p̃ (local frame, natural
  reparametrisation, centred and scaled; :mod:`mofdft_jax.density.adapter`);

and comes out as the per-atom energies (kcal/mol, before AtomRef) and, optionally, the standardised
ProjMINAO correction Δp̃ ``(natm, 477)``. Batches are ``jax.vmap`` over molecules padded to a common
``natm``.

Architecture (spec §3.1):

1. distance features: per pair-type affine map t = mul_{Z_a Z_b} d_ab + bias_{Z_a Z_b} of the
   distance (self pairs included, d = |x_a - x_b| + 1e-5), then K kernels: ``rbf``
   exp(-|β_k| (t - μ_k)²) (release default) or ``gbf`` the normalised Gaussian N(t; μ_k, σ_k)
   (paper Eq. S68);
2. node embedding h_a = c_{Z(a)} + Linear(Σ_b E_ab) + MLP(ShrinkGate(p̃_a)), with
   ShrinkGate(x) = outer ⊙ tanh(inner ⊙ x), per-slot learnable vectors initialised to λ_co = 10
   and λ_mul (0.05; 0.02 for ethanol) (spec §2.5);
3. attention bias Ẽ_ab = MLP(E_ab) ∈ ℝ^heads, shared by all layers; padded keys get -∞;
4. L pre-LayerNorm blocks h ← h + Attn(LN h, Ẽ), h ← h + MLP(LN h), logits q·k/√d_head + Ẽ;
5. final LayerNorm, dropout, per-atom energy MLP (H→H→1) summed over real atoms;
6. Δp head: per-atom MLP (H→H→477) on the same features (ProjMINAO, SI B.5.2).

GELU is the exact (erf) form as in PyTorch. Dropout (0.1 on residual branches, attention weights and
the final features) is active only with ``inference=False`` and a ``key``. With
``compute_dtype="float32"`` the parameters and inputs are cast to float32 for the network and the
outputs are returned as float64 (master weights stay float64).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import math
from typing import NamedTuple, Optional

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from mofdft_jax.density.adapter import NSLOT, element_index
from mofdft_jax.types import Array, Float, Int


@dataclasses.dataclass(frozen=True)
class GraphormerConfig:
    """Hyper-parameters of :class:`Graphormer3D` (spec §3.2, Table S3).

    Attributes:
      num_layers: number of G3D blocks L.
      hidden: node feature width H.
      ffn_hidden: width of each block's MLP.
      num_heads: attention heads (H must be divisible by it).
      num_kernels: number of distance kernels K.
      kernel: ``"rbf"`` (release default) or ``"gbf"`` (paper Eq. S68).
      nslot: per-atom coefficient slots (477 for H, C, N, O, F).
      num_atom_types: size of the atom-type embedding (index 0 = padding; H 1, C 2, N 3, O 4, F 5).
      dropout: dropout on the residual branches.
      attention_dropout: dropout on the attention weights.
      activation_dropout: dropout after the block MLP's GELU (release 0).
      input_dropout: dropout on the node embedding (release 0).
      output_dropout: dropout on the final node features before the heads (release 0.1).
      shrink_gate: use outer·tanh(inner·x) (True) or the plain inner·x scaling.
      shrink_inner_init: initial per-slot inner factor λ_mul (0.05; 0.02 for ethanol).
      shrink_outer_init: initial per-slot outer factor λ_co (10).
      delta_head: build the ProjMINAO Δp head.
      compute_dtype: ``"float64"`` or ``"float32"`` for the network arithmetic.
    """

    num_layers: int = 12
    hidden: int = 768
    ffn_hidden: int = 768
    num_heads: int = 32
    num_kernels: int = 128
    kernel: str = "rbf"
    nslot: int = NSLOT
    num_atom_types: int = 64
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0
    input_dropout: float = 0.0
    output_dropout: float = 0.1
    shrink_gate: bool = True
    shrink_inner_init: float = 0.05
    shrink_outer_init: float = 10.0
    delta_head: bool = True
    compute_dtype: str = "float64"

    def __post_init__(self):
        if self.hidden % self.num_heads:
            raise ValueError(f"hidden={self.hidden} is not divisible by num_heads={self.num_heads}")
        if self.kernel not in ("rbf", "gbf"):
            raise ValueError(f"kernel must be 'rbf' or 'gbf', got {self.kernel!r}")
        if self.compute_dtype not in ("float64", "float32"):
            raise ValueError(f"compute_dtype must be 'float64' or 'float32', got "
                             f"{self.compute_dtype!r}")

    def to_dict(self) -> dict:
        """Plain dict (JSON-serialisable)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "GraphormerConfig":
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown model config keys: {unknown}")
        return cls(**data)


#: Named configurations. ``paper``: spec §3.2 (≈45 M parameters); ``paper_ethanol``: the same with
#: λ_mul = 0.02; ``small``: trains on 2 CPU cores; ``tiny``: unit tests.
CONFIGS: dict[str, GraphormerConfig] = {
    "paper": GraphormerConfig(),
    "paper_ethanol": GraphormerConfig(shrink_inner_init=0.02),
    "small": GraphormerConfig(num_layers=4, hidden=128, ffn_hidden=128, num_heads=8,
                              num_kernels=64),
    "tiny": GraphormerConfig(num_layers=2, hidden=32, ffn_hidden=32, num_heads=4, num_kernels=16),
}


def make_config(name: str, **overrides) -> GraphormerConfig:
    """A named configuration from :data:`CONFIGS` with fields replaced by ``overrides``."""
    if name not in CONFIGS:
        raise ValueError(f"unknown model config {name!r}; choose from {sorted(CONFIGS)}")
    return dataclasses.replace(CONFIGS[name], **overrides)


class GeometryFeatures(NamedTuple):
    """The part of the network that depends on the geometry only, not on the coefficients.

    A density optimisation changes p̃ at fixed nuclei, so these are computed once per molecule
    (:meth:`Graphormer3D.geometry_features`) and passed to every step instead of being rebuilt:
    at 709 atoms (``small`` config) they were 0.49 s of a 1.07 s network value-and-gradient.
    They are functions of the weights, so training (which differentiates the weights) rebuilds
    them in every call.

    Attributes:
      node: ``(natm, hidden)`` c_{Z(a)} + Linear(Σ_b E_ab), the geometric part of h_a.
      attn_bias: ``(heads, natm, natm)`` Ẽ_ab = MLP(E_ab), shared by all blocks (padded keys
        are masked in the blocks, not here).
    """

    node: Float[Array, "natm hidden"]
    attn_bias: Float[Array, "heads natm natm"]


class GraphormerOutput(NamedTuple):
    """Network outputs for one (padded) molecule.

    Attributes:
      energy: ``()`` Σ over real atoms of the per-atom energies (kcal/mol, without AtomRef).
      atom_energies: ``(natm,)`` per-atom energies, 0 on padding atoms.
      delta: ``(natm, nslot)`` standardised Δp̃ (ProjMINAO head), or ``None``.
    """

    energy: Float[Array, ""]
    atom_energies: Float[Array, "natm"]
    delta: Optional[Float[Array, "natm nslot"]]


def _gelu(x):
    return jax.nn.gelu(x, approximate=False)


def _dropout(x, rate: float, key, inference: bool):
    if inference or rate == 0.0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0)


def _apply_rows(layer, x):
    """Apply a per-vector layer to the last axis of ``x`` of any leading shape."""
    flat = x.reshape(-1, x.shape[-1])
    out = jax.vmap(layer)(flat)
    return out.reshape(x.shape[:-1] + out.shape[-1:])


class _HostInit:
    """Parameter initialiser on the host (NumPy): model construction compiles nothing.

    With ``key=None`` every random parameter is zero (used under ``eval_shape`` for abstract
    skeletons, e.g. when loading a checkpoint); otherwise a NumPy generator seeded from the JAX
    key's bits draws them. ``stack`` prepends a layer axis (blocks are stored stacked).
    """

    def __init__(self, key):
        if key is None:
            self.rng = None
            return
        try:
            bits = jax.random.key_data(key)
        except (TypeError, ValueError):
            bits = key
        self.rng = np.random.default_rng(np.asarray(bits, dtype=np.uint32).ravel().tolist())

    def normal(self, shape):
        if self.rng is None:
            return jnp.zeros(shape)
        return jnp.asarray(self.rng.standard_normal(shape))

    def uniform(self, shape, low, high):
        if self.rng is None:
            return jnp.zeros(shape)
        return jnp.asarray(self.rng.uniform(low, high, shape))

    @staticmethod
    def full(shape, value):
        return jnp.asarray(np.full(shape, value, dtype=np.float64))


class Linear(eqx.Module):
    """Affine map y = W x + b, PyTorch's default init U(±1/√in) for W and b."""

    weight: Float[Array, "out in"]
    bias: Float[Array, "out"]

    def __init__(self, in_size: int, out_size: int, init: _HostInit, stack: tuple = ()):
        bound = 1.0 / math.sqrt(in_size)
        self.weight = init.uniform(stack + (out_size, in_size), -bound, bound)
        self.bias = init.uniform(stack + (out_size,), -bound, bound)

    def __call__(self, x):
        return self.weight @ x + self.bias


class LayerNorm(eqx.Module):
    """LayerNorm over the feature axis (ε = 1e-5, elementwise affine, PyTorch convention)."""

    weight: Float[Array, "size"]
    bias: Float[Array, "size"]

    def __init__(self, size: int, stack: tuple = ()):
        self.weight = _HostInit.full(stack + (size,), 1.0)
        self.bias = _HostInit.full(stack + (size,), 0.0)

    def __call__(self, x):
        mean = jnp.mean(x)
        var = jnp.mean((x - mean) ** 2)
        return (x - mean) * jax.lax.rsqrt(var + 1e-5) * self.weight + self.bias


class NonLinear(eqx.Module):
    """Two-layer MLP Linear → GELU → Linear (release ``NonLinear``)."""

    layer1: Linear
    layer2: Linear

    def __init__(self, in_size: int, out_size: int, hidden: Optional[int], init: _HostInit):
        hidden = in_size if hidden is None else hidden
        self.layer1 = Linear(in_size, hidden, init)
        self.layer2 = Linear(hidden, out_size, init)

    def __call__(self, x):
        return self.layer2(_gelu(self.layer1(x)))


def _attention_probs(q, k, bias, key_mask):
    logits = jnp.einsum("had,hbd->hab", q, k) + bias
    logits = jnp.where(key_mask[None, None, :], logits, -jnp.inf)
    logits = logits - jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))
    weights = jnp.exp(logits)
    return weights / jnp.sum(weights, axis=-1, keepdims=True)


@jax.custom_vjp
def biased_attention(q: Float[Array, "heads natm dh"], k: Float[Array, "heads natm dh"],
                     v: Float[Array, "heads natm dh"], bias: Float[Array, "heads natm natm"],
                     key_mask) -> Float[Array, "heads natm dh"]:
    """softmax_b(q_a·k_b + Ẽ_ab, padded keys b masked) v_b per head, with a hand-written VJP.

    The backward pass is the textbook one from the saved probabilities P:
    dV = Pᵀ G, dP = G Vᵀ, dS = P ⊙ (dP − rowsum(dP ⊙ P)), dQ = dS K, dK = dSᵀ Q. ``jax.grad`` of
    the plain composition (einsum, where, ``jax.nn.softmax``, einsum) is the same arithmetic in
    more passes over the ``(heads, natm, natm)`` arrays: at 709 atoms, 8 heads, float64 on the
    2-core CPU, 100 ms → 71 ms per block for value and gradient. The bias gets dS only when it is
    differentiated (training; ``symbolic_zeros`` tells), not in a density optimisation where it is
    a constant; reverse-over-reverse differentiation works (the
    backward is plain JAX), forward mode does not (``custom_vjp``). Dropout on P is not
    supported here; training with attention dropout uses the plain path.

    Args:
      q, k, v: ``(heads, natm, dh)``, q already scaled by 1/√dh.
      bias: ``(heads, natm, natm)`` Ẽ.
      key_mask: ``(natm,)`` bool, False for padded keys (at least one True).
    """
    probs = _attention_probs(q, k, bias, key_mask)
    return jnp.einsum("hab,hbd->had", probs, v)


def _biased_attention_fwd(q, k, v, bias, key_mask):
    # symbolic_zeros: the primals arrive as CustomVJPPrimal(value, perturbed). Whether the bias
    # needs a cotangent (training) travels in the residuals' tree structure: () yes, None no.
    bias_flag = () if bias.perturbed else None
    q, k, v, bias, key_mask = (x.value for x in (q, k, v, bias, key_mask))
    probs = _attention_probs(q, k, bias, key_mask)
    return jnp.einsum("hab,hbd->had", probs, v), (q, k, v, probs, bias_flag)


def _biased_attention_bwd(residuals, g):
    q, k, v, probs, bias_flag = residuals
    dv = jnp.einsum("hab,had->hbd", probs, g)
    dprobs = jnp.einsum("had,hbd->hab", g, v)
    dlogits = probs * (dprobs - jnp.sum(dprobs * probs, axis=-1, keepdims=True))
    dq = jnp.einsum("hab,hbd->had", dlogits, k)
    dk = jnp.einsum("hab,had->hbd", dlogits, q)
    return dq, dk, dv, (None if bias_flag is None else dlogits), None


biased_attention.defvjp(_biased_attention_fwd, _biased_attention_bwd, symbolic_zeros=True)


class Block(eqx.Module):
    """One pre-LayerNorm Graphormer-3D block: attention with distance bias, then an MLP."""

    ln_attn: LayerNorm
    qkv: Linear
    out: Linear
    ln_ffn: LayerNorm
    fc1: Linear
    fc2: Linear

    def __init__(self, config: GraphormerConfig, init: _HostInit, stack: tuple = ()):
        h, f = config.hidden, config.ffn_hidden
        self.ln_attn = LayerNorm(h, stack)
        self.qkv = Linear(h, 3 * h, init, stack)
        self.out = Linear(h, h, init, stack)
        self.ln_ffn = LayerNorm(h, stack)
        self.fc1 = Linear(h, f, init, stack)
        self.fc2 = Linear(f, h, init, stack)

    def __call__(self, h, attn_bias, key_mask, config: GraphormerConfig, key, inference: bool):
        natm, width = h.shape
        nh = config.num_heads
        dh = width // nh
        k_attn, k_res1, k_act, k_res2 = jax.random.split(key, 4)
        x = _apply_rows(self.ln_attn, h)
        q, k, v = jnp.split(_apply_rows(self.qkv, x), 3, axis=-1)
        q = q.reshape(natm, nh, dh) * (dh ** -0.5)
        k = k.reshape(natm, nh, dh)
        v = v.reshape(natm, nh, dh)
        if inference or config.attention_dropout == 0.0:
            attn = jnp.moveaxis(biased_attention(jnp.moveaxis(q, 1, 0), jnp.moveaxis(k, 1, 0),
                                                 jnp.moveaxis(v, 1, 0), attn_bias, key_mask),
                                0, 1).reshape(natm, width)
        else:
            logits = jnp.einsum("ahd,bhd->hab", q, k) + attn_bias
            logits = jnp.where(key_mask[None, None, :], logits, -jnp.inf)
            probs = jax.nn.softmax(logits, axis=-1)
            probs = _dropout(probs, config.attention_dropout, k_attn, inference)
            attn = jnp.einsum("hab,bhd->ahd", probs, v).reshape(natm, width)
        attn = _apply_rows(self.out, attn)
        h = h + _dropout(attn, config.dropout, k_res1, inference)
        x = _apply_rows(self.ln_ffn, h)
        x = _dropout(_gelu(_apply_rows(self.fc1, x)), config.activation_dropout, k_act, inference)
        x = _apply_rows(self.fc2, x)
        return h + _dropout(x, config.dropout, k_res2, inference)


_UNROLL_BLOCKS = contextvars.ContextVar("unroll_blocks", default=False)


@contextlib.contextmanager
def unrolled_blocks():
    """Trace the networks built inside this context with the block ``lax.scan`` fully unrolled.

    For cost accounting only: XLA's ``cost_analysis()`` counts a loop body once, so a scanned
    network reports the flops and bytes of one block (paper network, 168 atoms, value and
    gradient: 3.7 GFLOP scanned against 33.4 GFLOP unrolled). The solver keeps the scan (same
    speed here, faster compilation). Read at trace time: use a fresh ``jax.jit`` inside.
    """
    token = _UNROLL_BLOCKS.set(True)
    try:
        yield
    finally:
        _UNROLL_BLOCKS.reset(token)


def cast_floats(tree, dtype):
    """``tree`` with every inexact array cast to ``dtype`` (other leaves unchanged)."""
    return jax.tree.map(lambda x: x.astype(dtype) if eqx.is_inexact_array(x) else x, tree)


class Graphormer3D(eqx.Module):
    """Graphormer-3D energy network with the ProjMINAO Δp head (spec §3.1).

    Build with ``Graphormer3D(config, key=key)``; call on one padded molecule (see module docs).
    The blocks are stored stacked (leading axis L) and applied with ``lax.scan``. The padding row 0
    of the atom-type embedding starts at zero (PyTorch ``padding_idx``).
    """

    config: GraphormerConfig = eqx.field(static=True)
    atom_embedding: Float[Array, "types hidden"]
    pair_mul: Float[Array, "pairs"]
    pair_bias: Float[Array, "pairs"]
    kernel_means: Float[Array, "kernels"]
    kernel_widths: Float[Array, "kernels"]
    edge_proj: Linear
    bias_proj: NonLinear
    shrink_inner: Float[Array, "nslot"]
    shrink_outer: Float[Array, "nslot"]
    coeff_encoder: NonLinear
    blocks: Block
    final_ln: LayerNorm
    energy_head: NonLinear
    delta_head: Optional[NonLinear]

    def __init__(self, config: GraphormerConfig, *, key):
        """Initialise from a JAX PRNG key (parameters drawn on the host with NumPy, seeded by the
        key bits, so construction compiles nothing); ``key=None`` gives all-zero weights (for
        abstract skeletons under ``eqx.filter_eval_shape``)."""
        init = _HostInit(key)
        c = config
        self.config = c
        rows = init.normal((c.num_atom_types - 1, c.hidden))
        self.atom_embedding = jnp.concatenate([jnp.zeros((1, c.hidden)), rows]) if key is None \
            else jnp.asarray(np.concatenate([np.zeros((1, c.hidden)), np.asarray(rows)]))
        npair = c.num_atom_types ** 2
        self.pair_mul = init.full((npair,), 1.0)
        self.pair_bias = init.full((npair,), 0.0)
        self.kernel_means = init.uniform((c.num_kernels,), 0.0, 3.0)
        if c.kernel == "rbf":
            self.kernel_widths = init.uniform((c.num_kernels,), 0.1, 10.0)
        else:
            self.kernel_widths = init.uniform((c.num_kernels,), 0.0, 3.0)
        self.edge_proj = Linear(c.num_kernels, c.hidden, init)
        self.bias_proj = NonLinear(c.num_kernels, c.num_heads, None, init)
        self.shrink_inner = init.full((c.nslot,), c.shrink_inner_init)
        self.shrink_outer = init.full((c.nslot,), c.shrink_outer_init)
        self.coeff_encoder = NonLinear(c.nslot, c.hidden, c.hidden, init)
        self.blocks = Block(c, init, stack=(c.num_layers,))
        self.final_ln = LayerNorm(c.hidden)
        self.energy_head = NonLinear(c.hidden, 1, None, init)
        self.delta_head = NonLinear(c.hidden, c.nslot, None, init) if c.delta_head else None

    def distance_features(self, types, coords) -> Float[Array, "natm natm kernels"]:
        """E_ab: kernels of the pair-type affine map of the distances (self pairs d = 1e-5)."""
        diff = coords[:, None, :] - coords[None, :, :]
        sq = jnp.sum(diff * diff, axis=-1)
        eye = jnp.eye(coords.shape[0], dtype=bool)
        dist = jnp.where(eye, 0.0, jnp.sqrt(jnp.where(eye, 1.0, sq))) + 1e-5
        pair = types[:, None] * self.config.num_atom_types + types[None, :]
        t = self.pair_mul[pair] * dist + self.pair_bias[pair]
        x = t[..., None] - self.kernel_means
        if self.config.kernel == "rbf":
            return jnp.exp(-jnp.abs(self.kernel_widths) * x * x)
        std = jnp.abs(self.kernel_widths) + 1e-5
        return jnp.exp(-0.5 * (x / std) ** 2) / (math.sqrt(2.0 * math.pi) * std)

    def _compute_dtype(self):
        return jnp.float32 if self.config.compute_dtype == "float32" else jnp.float64

    def geometry_features(self, atom_numbers: Int[Array, "natm"],
                          coords: Float[Array, "natm 3"]) -> GeometryFeatures:
        """:class:`GeometryFeatures` of one padded molecule (items 1–3 of the module docstring
        without the coefficient encoder), in the network's compute dtype.

        Args:
          atom_numbers: ``(natm,)`` atomic numbers, 0 for padding atoms.
          coords: ``(natm, 3)`` Bohr.
        """
        dtype = self._compute_dtype()
        model = cast_floats(self, dtype)
        mask = atom_numbers > 0
        types = jnp.where(mask, element_index(atom_numbers) + 1, 0)
        feats = model.distance_features(types, coords.astype(dtype))  # (natm, natm, K)
        agg = jnp.sum(jnp.where(mask[None, :, None], feats, 0.0), axis=1)
        node = model.atom_embedding[types] + _apply_rows(model.edge_proj, agg)
        attn_bias = jnp.moveaxis(_apply_rows(model.bias_proj, feats), -1, 0)  # (heads, natm, natm)
        return GeometryFeatures(node=node, attn_bias=attn_bias)

    def __call__(self, atom_numbers: Int[Array, "natm"], coords: Float[Array, "natm 3"],
                 coeffs: Float[Array, "natm nslot"], *, key=None, inference: bool = True,
                 with_delta: bool = False,
                 features: Optional[GeometryFeatures] = None) -> GraphormerOutput:
        """Energy (and Δp̃) of one padded molecule.

        Args:
          atom_numbers: ``(natm,)`` atomic numbers, 0 for padding atoms.
          coords: ``(natm, 3)`` Bohr.
          coeffs: ``(natm, nslot)`` processed coefficients p̃ (zeros outside each atom's block).
          key: PRNG key for dropout (required when ``inference`` is False).
          inference: disable dropout.
          with_delta: also evaluate the Δp head.
          features: :meth:`geometry_features` of the same weights and geometry, precomputed
            (density optimisation); ``None`` computes them here (training, single calls).
        """
        c = self.config
        if not inference and key is None:
            raise ValueError("training mode (inference=False) needs a dropout key")
        if key is None:
            key = jax.random.PRNGKey(0)
        dtype = self._compute_dtype()
        if features is None:
            features = self.geometry_features(atom_numbers, coords)
        features = cast_floats(features, dtype)
        model = cast_floats(self, dtype)
        coeffs = coeffs.astype(dtype)
        mask = atom_numbers > 0
        k_in, k_out, k_blocks = jax.random.split(key, 3)

        if c.shrink_gate:
            gated = jnp.tanh(coeffs * model.shrink_inner) * model.shrink_outer
        else:
            gated = coeffs * model.shrink_inner
        h = features.node + _apply_rows(model.coeff_encoder, gated)
        h = _dropout(h, c.input_dropout, k_in, inference)
        attn_bias = features.attn_bias

        params, static = eqx.partition(model.blocks, eqx.is_array)

        def step(h, inputs):
            block_params, block_key = inputs
            block = eqx.combine(block_params, static)
            return block(h, attn_bias, mask, c, block_key, inference), None

        h, _ = jax.lax.scan(step, h, (params, jax.random.split(k_blocks, c.num_layers)),
                            unroll=bool(_UNROLL_BLOCKS.get()) or 1)
        h = _apply_rows(model.final_ln, h)
        h = _dropout(h, c.output_dropout, k_out, inference)
        atom_energies = jnp.where(mask, _apply_rows(model.energy_head, h)[:, 0], 0.0)
        delta = None
        if with_delta:
            if model.delta_head is None:
                raise ValueError("this model was built without the Δp head (delta_head=False)")
            delta = _apply_rows(model.delta_head, h).astype(jnp.float64)
        atom_energies = atom_energies.astype(jnp.float64)
        return GraphormerOutput(energy=jnp.sum(atom_energies), atom_energies=atom_energies,
                                delta=delta)


def abstract_graphormer(config: GraphormerConfig) -> Graphormer3D:
    """A :class:`Graphormer3D` skeleton of ``jax.ShapeDtypeStruct`` leaves (no allocation)."""
    return eqx.filter_eval_shape(Graphormer3D, config, key=None)


def count_parameters(model_or_config) -> int:
    """Number of trainable scalars of a model, or of the model a config builds (no allocation)."""
    if isinstance(model_or_config, GraphormerConfig):
        model_or_config = abstract_graphormer(model_or_config)
    leaves = jax.tree.leaves(model_or_config)
    return int(sum(math.prod(x.shape) for x in leaves
                   if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.inexact)))


if __name__ == "__main__":  # python -m mofdft_jax.model.graphormer: parameter counts of the configs
    for _name, _config in CONFIGS.items():
        print(f"{_name:14s} {count_parameters(_config):>12,d} parameters")

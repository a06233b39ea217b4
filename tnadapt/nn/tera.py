"""TeRA: a random, frozen, shared Tucker network per weight shape, trained only through diagonal vectors.

Reconstruction of TeRA (Gu et al., arXiv 2509.03234; see ``docs/tera_and_lora.md`` for
what is confirmed by the paper's abstract and what is our design choice).  Each adapted
``nn.Linear`` (``d_in -> d_out``) has its update tensorised over modes
``(I_1, ..., I_a)`` (``∏ I = d_in``) and ``(O_1, ..., O_b)`` (``∏ O = d_out``):

    X_l = G ×_1 F_{l,1} ×_2 ··· ×_N F_{l,N},      ΔW_l = alpha · unfold(X_l)   (out modes rows, in modes columns)

with ``F_{l,n} = U_n diag(λ_{l,n})`` (``placement="bond"``, ``λ ∈ R^{R_n}``) or
``F_{l,n} = diag(λ_{l,n}) U_n`` (``placement="physical"``, ``λ ∈ R^{I_n}``).  The core ``G``
and the ``U_n`` are random, frozen, shared by every layer of a shape group, and
regenerated from a seed (optionally saved); the ``λ`` are the only trained numbers, one
set per adapted matrix, and one vector (``zero_vector``) starts at 0 so ``ΔW = 0`` at init.

Forward: per call, :func:`~tnadapt.nn.tera_factors.forward_costs` compares the
multiply-adds of (a) contracting ``x`` reshaped to ``(rows, I_1..I_a)`` with the network
mode by mode and (b) building the dense ``ΔW`` and doing one matmul, and takes the
cheaper (``forward_mode="auto"``; ``"factored"``/``"dense"`` force one).

>>> import torch
>>> from torch import nn
>>> from tnadapt.nn import TeRAConfig, wrap, get_adapters, merge, unmerge
>>> net = wrap(nn.ModuleDict({"q": nn.Linear(12, 10), "v": nn.Linear(12, 10)}), TeRAConfig(target_modules=["q", "v"]))
>>> tera = get_adapters(net)[0]
>>> tera.in_modes, tera.out_modes, tera.ranks, tera.num_parameters()     # 2 matrices x (3+4+2+5)
((3, 4), (2, 5), (3, 4, 2, 5), 28)
>>> bool((tera.delta_weight(slot=1) == 0).all())                          # zero vector: ΔW = 0 at init
True
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, cast

import torch
from torch import nn

from .config import AdapterConfig
from .family import AdapterFamily, AdapterGroup, register_family
from .parameters import new_parameter
from .targets import TargetInfo, group_by_shape, group_dtype_device
from .tera_factors import (
    FACTOR_INITS,
    check_fingerprint,
    fingerprint,
    forward_costs,
    group_seed,
    random_factors,
    split_dim,
    tucker_max_ranks,
)
from .validation import (
    allocation_guard,
    cap_ranks,
    check_bool,
    check_choice,
    check_dtype_name,
    check_float,
    check_int,
    check_rank,
    clip_ranks,
    prefixed,
)

__all__ = ["FORWARD_MODES", "PLACEMENTS", "TERA_FAMILY", "TeRAAdapter", "TeRAConfig", "build_tera"]

#: Where the trained diagonals sit: on the bond legs (between ``G`` and ``U_n``) or on the physical legs.
PLACEMENTS = ("bond", "physical")
#: ``auto`` picks the cheaper path per call (see :func:`~tnadapt.nn.tera_factors.forward_costs`).
FORWARD_MODES = ("auto", "factored", "dense")


def _int_list(name: str, values: Any) -> tuple[int, ...]:
    if not isinstance(values, Sequence) or isinstance(values, str):
        raise TypeError(f"{name}: expected a list of positive ints, got {type(values).__name__} {values!r}")
    return tuple(check_int(f"{name}[{k}]", v, minimum=1) for k, v in enumerate(values))


class TeRAAdapter(nn.Module):
    """TeRA owner for one shape group: frozen ``G``/``U_n`` buffers and per-slot ``λ`` Parameters.

    Parameters
    ----------
    in_features, out_features:
        Layer sizes (``x (..., in_features) -> (..., out_features)``).
    num_slots:
        Number of adapted matrices sharing the frozen factors; slot ``s`` is addressed by
        the key ``{"slot": s}``.
    in_modes, out_modes:
        Mode splits, ``∏ in_modes == in_features``, ``∏ out_modes == out_features``.
    ranks:
        Tucker ranks ``R_n``, one per mode (in modes first); ``None``: ``R_n = I_n``.  A rank above
        the mode's largest useful rank (:func:`~tnadapt.nn.tera_factors.tucker_max_ranks`: ``I_n``
        for ``placement="physical"``, ``I_n · ∏_{m≠n} min(I_m, R_m)`` for ``"bond"``, where extra
        bond directions do add trained entries up to that bound) is capped there with one
        :class:`~tnadapt.nn.RankClippedWarning`; frozen factors too large to allocate raise a
        ``ValueError`` naming their sizes.
    placement:
        ``"bond"`` (``λ_n ∈ R^{R_n}``) or ``"physical"`` (``λ_n ∈ R^{I_n}``).
    zero_vector:
        Index (in ``in_modes + out_modes`` order, negative allowed) of the vector that starts at 0.
    lambda_init:
        Initial value of every other vector entry.  The update is multilinear in the
        ``N`` vectors, so the zero vector's first gradient scales like ``lambda_init^(N-1)``:
        keep it ``O(1)``.
    factor_init, factor_scale, seed:
        Distribution of the frozen factors (:data:`~tnadapt.nn.tera_factors.FACTOR_INITS`),
        the normalisation (``||ΔW||_F² = factor_scale² · d_out`` at ``λ = 1``), and the seed
        (mixed with the shape, :func:`~tnadapt.nn.tera_factors.group_seed`).
    alpha:
        Plain multiplier of ``ΔW``.
    lambda_init, factor_scale, alpha are finite floats (``factor_scale > 0``); every argument is
    type-checked without coercion (a string ``"nan"`` or ``"3"`` is refused), also when
    :meth:`from_config` rebuilds an owner from a loaded ``adapter_config.json``.
    save_factors:
        Whether ``G``/``U_n`` go into ``state_dict`` (and the adapter file); otherwise they
        are regenerated from the seed on load and checked against a fingerprint.
    forward_mode:
        ``"auto"``, ``"factored"`` or ``"dense"``.
    """

    core: torch.Tensor  # registered buffer (frozen, shared): the Tucker core G

    def __init__(
        self,
        in_features: int,
        out_features: int,
        num_slots: int,
        in_modes: Sequence[int],
        out_modes: Sequence[int],
        ranks: Sequence[int] | None = None,
        *,
        placement: str = "bond",
        zero_vector: int = -1,
        lambda_init: float = 1.0,
        factor_init: str = "orthogonal",
        factor_scale: float = 1.0,
        seed: int = 0,
        alpha: float = 1.0,
        save_factors: bool = False,
        forward_mode: str = "auto",
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        _generate: bool = True,
    ) -> None:
        super().__init__()
        self.in_features = check_int("in_features", in_features, minimum=1)
        self.out_features = check_int("out_features", out_features, minimum=1)
        self.num_slots = check_int("num_slots", num_slots, minimum=1)
        self.in_modes = _int_list("in_modes", in_modes)
        self.out_modes = _int_list("out_modes", out_modes)
        for name, modes, size in (
            ("in_modes", self.in_modes, in_features),
            ("out_modes", self.out_modes, out_features),
        ):
            if not modes or math.prod(modes) != size:
                raise ValueError(f"{name}: expected a non-empty split with product {size}, got {list(modes)}")
        legs = (*self.in_modes, *self.out_modes)
        self.placement = check_choice("placement", placement, PLACEMENTS)
        self.forward_mode = check_choice("forward_mode", forward_mode, FORWARD_MODES)
        self.factor_init = check_choice("factor_init", factor_init, FACTOR_INITS)
        requested = legs if ranks is None else _int_list("ranks", ranks)
        if len(requested) != len(legs):
            raise ValueError(f"ranks: expected one Tucker rank per mode ({len(legs)} modes {list(legs)}), got {ranks}")
        limits = tucker_max_ranks(legs, requested, self.placement)
        where = f"Tucker network with modes {list(legs)} (placement={self.placement!r})"
        self.ranks = tuple(cap_ranks("ranks", requested, limits, where=where))
        n_modes = len(legs)
        zero_vector = check_int("zero_vector", zero_vector)
        if not -n_modes <= zero_vector < n_modes:
            raise ValueError(f"zero_vector: expected an int in [{-n_modes}, {n_modes}), got {zero_vector!r}")
        self.zero_vector = zero_vector % n_modes
        self.lambda_init = check_float("lambda_init", lambda_init)
        self.factor_scale = check_float("factor_scale", factor_scale, minimum=0, strict=True)
        self.seed = check_int("seed", seed)
        self.alpha = check_float("alpha", alpha)
        self.save_factors = check_bool("save_factors", save_factors)
        self.fingerprint: dict[str, list[float]] = {}
        shapes = [self.ranks, *((n, r) for n, r in zip(legs, self.ranks))]
        with allocation_guard("ranks", "frozen Tucker core and factors (float64 while drawn)", shapes, torch.float64):
            if _generate:
                core, us = random_factors(
                    self.in_modes,
                    self.out_modes,
                    self.ranks,
                    seed=group_seed(self.seed, self.in_features, self.out_features),
                    init=self.factor_init,
                    scale=self.factor_scale,
                )
                self.fingerprint = fingerprint({"core": core, **{f"u{n}": u for n, u in enumerate(us)}})
            else:
                core, us = torch.zeros(self.ranks), [torch.zeros(n, r) for n, r in zip(legs, self.ranks)]
        dtype = dtype if dtype is not None else torch.get_default_dtype()
        self.register_buffer("core", core.to(dtype=dtype, device=device).contiguous(), persistent=self.save_factors)
        for n, u in enumerate(us):
            self.register_buffer(f"u{n}", u.to(dtype=dtype, device=device).contiguous(), persistent=self.save_factors)
        lengths = self.ranks if self.placement == "bond" else legs
        self.lambdas = nn.ParameterList(
            [
                new_parameter(
                    torch.full(
                        (self.num_slots, length),
                        0.0 if n == self.zero_vector else self.lambda_init,
                        dtype=dtype,
                        device=device,
                    )
                )
                for n, length in enumerate(lengths)
            ]
        )
        if self.save_factors:
            self.register_load_state_dict_post_hook(_check_loaded_factors)

    # ------------------------------------------------------------------ structure
    @property
    def legs(self) -> tuple[int, ...]:
        """Physical mode sizes, in modes first: ``in_modes + out_modes``."""
        return (*self.in_modes, *self.out_modes)

    @property
    def modes(self) -> dict[str, int]:
        """The index modes ``{"slot": num_slots}`` (one slot per adapted matrix; fixed by the layer)."""
        return {"slot": self.num_slots}

    def factors(self) -> list[torch.Tensor]:
        """The frozen ``U_n`` (``(I_n, R_n)``), in mode order."""
        return [getattr(self, f"u{n}") for n in range(len(self.legs))]

    def frozen_tensors(self) -> dict[str, torch.Tensor]:
        """``{"core": G, "u0": U_1, ...}``."""
        return {"core": self.core, **{f"u{n}": u for n, u in enumerate(self.factors())}}

    def num_parameters(self) -> int:
        """Trainable entries: ``num_slots · Σ_n len(λ_n)`` (``len = R_n`` for bond, ``I_n`` for physical)."""
        return sum(int(p.numel()) for p in self.lambdas)

    def config_dict(self) -> dict[str, Any]:
        """JSON-ready constructor arguments plus the factors' fingerprint."""
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "num_slots": self.num_slots,
            "in_modes": list(self.in_modes),
            "out_modes": list(self.out_modes),
            "ranks": list(self.ranks),
            "placement": self.placement,
            "zero_vector": self.zero_vector,
            "lambda_init": self.lambda_init,
            "factor_init": self.factor_init,
            "factor_scale": self.factor_scale,
            "seed": self.seed,
            "alpha": self.alpha,
            "save_factors": self.save_factors,
            "forward_mode": self.forward_mode,
            "fingerprint": self.fingerprint,
        }

    @classmethod
    def from_config(
        cls,
        config: Mapping[str, Any],
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> TeRAAdapter:
        """Rebuild from :meth:`config_dict` (``λ`` are loaded afterwards).

        Without saved factors they are regenerated from the seed and must match the
        recorded fingerprint; with saved factors the loaded ones are checked after loading.

        >>> a = TeRAAdapter(6, 4, 2, [2, 3], [4], seed=3)
        >>> TeRAAdapter.from_config(a.config_dict()).config_dict() == a.config_dict()
        True
        """
        known = set(inspect.signature(cls).parameters) - {"dtype", "device", "_generate"}
        data = dict(config)
        recorded = data.pop("fingerprint", None)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"config: unknown TeRAAdapter field(s) {unknown}")
        saved = check_bool("save_factors", data.get("save_factors", False))
        owner = cls(**data, dtype=dtype, device=device, _generate=not saved)
        if recorded is not None:
            if saved:
                owner.fingerprint = {str(k): [float(v) for v in vs] for k, vs in recorded.items()}
            else:
                check_fingerprint(recorded, owner.frozen_tensors(), where="TeRA factors regenerated from the seed")
        return owner

    @staticmethod
    def state_shapes(config: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
        """Shapes of the ``state_dict`` a :meth:`config_dict` implies, computed without building anything.

        >>> a = TeRAAdapter(6, 4, 2, [2, 3], [4], ranks=[2, 2, 3])
        >>> TeRAAdapter.state_shapes(a.config_dict()) == {k: tuple(v.shape) for k, v in a.state_dict().items()}
        True
        """
        legs = [int(n) for n in (*config["in_modes"], *config["out_modes"])]
        ranks = legs if config.get("ranks") is None else [int(r) for r in config["ranks"]]
        if len(ranks) != len(legs):
            raise ValueError(f"ranks: expected one Tucker rank per mode ({len(legs)} modes {legs}), got {ranks}")
        ranks = clip_ranks(ranks, tucker_max_ranks(legs, ranks, config.get("placement", "bond")))[0]  # as __init__
        shapes: dict[str, tuple[int, ...]] = {}
        if bool(config.get("save_factors", False)):
            shapes["core"] = tuple(ranks)
            shapes.update({f"u{n}": (leg, r) for n, (leg, r) in enumerate(zip(legs, ranks))})
        lengths = ranks if config.get("placement", "bond") == "bond" else legs
        shapes.update({f"lambdas.{n}": (int(config["num_slots"]), length) for n, length in enumerate(lengths)})
        return shapes

    # ------------------------------------------------------------------ the network
    def _slot(self, key: Mapping[str, Any]) -> int:
        extra = sorted(set(key) - {"slot"})
        if extra:
            raise ValueError(f"index: TeRA adapters are indexed by 'slot' only, got extra mode(s) {extra}")
        slot = key.get("slot", 0 if self.num_slots == 1 else None)
        if isinstance(slot, torch.Tensor) and slot.ndim == 0:
            slot = int(slot)
        if isinstance(slot, bool) or not isinstance(slot, int) or not 0 <= slot < self.num_slots:
            raise ValueError(f"index: expected slot=<int in [0, {self.num_slots})>, got {slot!r}")
        return slot

    def slot_factors(self, slot: int) -> list[torch.Tensor]:
        """``F_n = U_n diag(λ_n)`` (bond) or ``diag(λ_n) U_n`` (physical) for one slot, ``(I_n, R_n)`` each."""
        lambdas = cast(list[torch.Tensor], list(self.lambdas._parameters.values()))  # fast ParameterList access
        out = []
        for u, lam in zip(self.factors(), lambdas):
            vec = lam[slot].to(u.dtype)
            out.append(u * vec if self.placement == "bond" else vec[:, None] * u)
        return out

    def delta_tensor(self, slot: int) -> torch.Tensor:
        """``X = G ×_1 F_1 ··· ×_N F_N`` of one slot, shape ``in_modes + out_modes`` (no ``alpha``)."""
        acc = self.core
        for f in self.slot_factors(slot):
            acc = torch.tensordot(acc, f, dims=([0], [1]))  # contracts R_n, appends I_n
        return acc

    def delta_weight(self, **key: Any) -> torch.Tensor:
        """Dense ``alpha · ΔW`` of one slot, ``(out_features, in_features)`` (``nn.Linear.weight`` layout).

        >>> a = TeRAAdapter(6, 4, 1, [2, 3], [2, 2], zero_vector=0)
        >>> with torch.no_grad():
        ...     _ = a.lambdas[0].fill_(0.5)
        >>> x = torch.randn(3, 6)
        >>> bool(torch.allclose(a(x, slot=0), x @ a.delta_weight(slot=0).T, atol=1e-6))
        True
        """
        x = self.delta_tensor(self._slot(key)).reshape(self.in_features, self.out_features)
        return (x * self.alpha if self.alpha != 1.0 else x).T

    def costs(self, rows: int) -> dict[str, int]:
        """Multiply-adds of both forward paths for ``rows`` input rows (see :func:`forward_costs`)."""
        return forward_costs(self.in_modes, self.out_modes, self.ranks, rows)

    def path(self, rows: int) -> str:
        """The path :meth:`forward_delta` takes for ``rows`` rows: ``"factored"`` or ``"dense"``.

        ``auto`` takes ``dense`` only when building ``ΔW`` plus the ``rows × d_in × d_out``
        matmul costs fewer multiply-adds than the factored contraction.
        """
        if self.forward_mode != "auto":
            return self.forward_mode
        c = self.costs(rows)
        return "dense" if c["dense"] < c["factored"] else "factored"

    def forward(self, x: torch.Tensor, slot: int = 0) -> torch.Tensor:
        """``alpha · x @ ΔW_slotᵀ`` for ``x (..., in_features)`` -> ``(..., out_features)``."""
        return self.forward_delta(x, {"slot": slot})

    def forward_delta(self, x: torch.Tensor, key: Mapping[str, Any]) -> torch.Tensor:
        """Adapter output for ``x (..., in_features)`` and ``key = {"slot": s}``; shape ``(..., out_features)``."""
        if x.shape[-1] != self.in_features:
            raise ValueError(f"x: expected last dim in_features={self.in_features}, got shape {tuple(x.shape)}")
        slot = self._slot(key)
        if x.dtype != self.core.dtype:
            x = x.to(self.core.dtype)
        lead = x.shape[:-1]
        rows = x.reshape(-1, self.in_features)
        if self.path(rows.shape[0]) == "dense":
            out = rows @ self.delta_tensor(slot).reshape(self.in_features, self.out_features)
        else:
            factors = self.slot_factors(slot)
            a = len(self.in_modes)
            y = rows.reshape(-1, *self.in_modes)
            for f in factors[:a]:
                y = torch.tensordot(y, f, dims=([1], [0]))  # (rows, I_{j+1}.., R_1..R_j)
            r_in = math.prod(self.ranks[:a])
            y = y.reshape(-1, r_in) @ self.core.reshape(r_in, -1)
            y = y.reshape(-1, *self.ranks[a:])
            for f in factors[a:]:
                y = torch.tensordot(y, f, dims=([1], [1]))  # (rows, R_{j+1}.., O_1..O_j)
            out = y.reshape(-1, self.out_features)
        if self.alpha != 1.0:
            out = out * self.alpha
        return out.reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, slots={self.num_slots}, "
            f"in_modes={self.in_modes}, out_modes={self.out_modes}, ranks={self.ranks}, placement={self.placement}, "
            f"alpha={self.alpha:g}"
        )


def _check_loaded_factors(module: nn.Module, incompatible: Any) -> None:
    """Post-load hook: saved frozen factors must match the fingerprint recorded with them."""
    assert isinstance(module, TeRAAdapter)
    if module.fingerprint:
        check_fingerprint(module.fingerprint, module.frozen_tensors(), where="TeRA factors loaded from the file")


# ---------------------------------------------------------------------- config and family
@dataclass
class TeRAConfig(AdapterConfig):
    """TeRA settings on top of the targeting fields (all choices documented in ``docs/tera_and_lora.md``).

    Attributes
    ----------
    order:
        Number of tensor modes of ``d_in`` and of ``d_out``: an int for both or ``[a, b]``.
        Dimensions are split by :func:`~tnadapt.nn.tera_factors.split_dim` (balanced).
    splits:
        Explicit splits overriding ``order`` for given sizes, e.g. ``{768: [8, 8, 12]}``.
    rank:
        Tucker ranks: ``None`` (default) ``R_n = I_n``; an int for every mode; or one per
        mode (in modes first; every shape group must then have that many modes).
    placement, zero_vector, lambda_init, factor_init, factor_scale, alpha, save_factors, forward_mode:
        See :class:`TeRAAdapter`.
    seed:
        Seed of the frozen factors (mixed with each group's shape).
    dtype:
        Floating dtype name for the adapter; default: the base weights' dtype.

    Every field is checked at construction without coercion, so also when
    :func:`~tnadapt.nn.load_adapter` rebuilds the config: NaN/Inf floats, strings where numbers
    are expected and non-bool ``save_factors`` raise ``ValueError``/``TypeError`` naming the field.
    """

    family: ClassVar[str] = "tera"
    rank_pattern_refusal: ClassVar[str] = (
        "the Tucker ranks are those of the frozen random core and factors that every module of a shape group "
        "shares, so a module cannot have its own; set rank= (per mode), or scale modules with alpha_pattern"
    )

    order: int | list[int] = 2
    splits: dict[int, list[int]] = field(default_factory=dict)
    rank: int | list[int] | None = None
    placement: str = "bond"
    zero_vector: int = -1
    lambda_init: float = 1.0
    factor_init: str = "orthogonal"
    factor_scale: float = 1.0
    seed: int = 0
    alpha: float = 1.0
    save_factors: bool = False
    forward_mode: str = "auto"
    dtype: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        orders = [self.order, self.order] if isinstance(self.order, int) else list(self.order)
        if len(orders) != 2 or any(isinstance(o, bool) or not isinstance(o, int) or o < 1 for o in orders):
            raise ValueError(f"order: expected a positive int or [in_order, out_order], got {self.order!r}")
        if not isinstance(self.order, int):
            self.order = [int(o) for o in orders]
        if not isinstance(self.splits, Mapping):
            raise TypeError(f"splits: expected a mapping size -> list of factors, got {self.splits!r}")
        splits: dict[int, list[int]] = {}
        for size, parts in self.splits.items():
            # JSON object keys are strings: accept "768" for 768, nothing else
            key = int(size) if isinstance(size, str) and size.isdecimal() else check_int("splits key", size, minimum=1)
            factors = list(_int_list(f"splits[{key}]", parts))
            if math.prod(factors) != key:
                raise ValueError(f"splits: {factors} is not a factorisation of {key} into positive ints")
            splits[key] = factors
        self.splits = splits
        if self.rank is not None:
            self.rank = check_rank("rank", self.rank)
        check_choice("placement", self.placement, PLACEMENTS)
        check_choice("factor_init", self.factor_init, FACTOR_INITS)
        check_choice("forward_mode", self.forward_mode, FORWARD_MODES)
        self.zero_vector = check_int("zero_vector", self.zero_vector)
        self.lambda_init = check_float("lambda_init", self.lambda_init)
        self.factor_scale = check_float("factor_scale", self.factor_scale, minimum=0, strict=True)
        self.seed = check_int("seed", self.seed)
        self.alpha = check_float("alpha", self.alpha)
        self.save_factors = check_bool("save_factors", self.save_factors)
        if self.dtype is not None:
            check_dtype_name("dtype", self.dtype)

    def modes_for(self, in_features: int, out_features: int) -> tuple[list[int], list[int]]:
        """The ``(in_modes, out_modes)`` split of one shape."""
        orders = [self.order, self.order] if isinstance(self.order, int) else list(self.order)
        return tuple(  # type: ignore[return-value]
            self.splits.get(size) or split_dim(size, order) for size, order in zip((in_features, out_features), orders)
        )

    def ranks_for(self, legs: Sequence[int]) -> list[int] | None:
        """Tucker ranks for modes ``legs`` (``None`` means ``R_n = I_n``)."""
        if self.rank is None:
            return None
        if isinstance(self.rank, int):
            return [self.rank] * len(legs)
        if len(self.rank) != len(legs):
            raise ValueError(f"rank: {len(self.rank)} Tucker ranks given, but the modes are {list(legs)}")
        return list(self.rank)


def build_tera(config: AdapterConfig, targets: Sequence[TargetInfo]) -> dict[str, AdapterGroup]:
    """One :class:`TeRAAdapter` per shape group; its members get slots ``0, 1, ...`` in match order."""
    if not isinstance(config, TeRAConfig):
        raise TypeError(f"config: expected a TeRAConfig, got {type(config).__name__}")
    groups: dict[str, AdapterGroup] = {}
    for gname, members in group_by_shape(targets).items():
        dtype, device = group_dtype_device(members, config.dtype)
        d_in, d_out = members[0].in_features, members[0].out_features
        in_modes, out_modes = config.modes_for(d_in, d_out)
        with prefixed(f"shape group {gname} (e.g. {members[0].name!r})"):
            owner = TeRAAdapter(
                d_in,
                d_out,
                len(members),
                in_modes,
                out_modes,
                config.ranks_for([*in_modes, *out_modes]),
                placement=config.placement,
                zero_vector=config.zero_vector,
                lambda_init=config.lambda_init,
                factor_init=config.factor_init,
                factor_scale=config.factor_scale,
                seed=config.seed,
                alpha=config.alpha,
                save_factors=config.save_factors,
                forward_mode=config.forward_mode,
                dtype=dtype,
                device=device,
            )
        groups[gname] = AdapterGroup(owner, {t.name: {"slot": i} for i, t in enumerate(members)})
    return groups


TERA_FAMILY = register_family(
    AdapterFamily(
        name="tera",
        config_cls=TeRAConfig,
        build=build_tera,
        owner_from_config=TeRAAdapter.from_config,
        state_shapes=TeRAAdapter.state_shapes,
    )
)

"""Argument checks of the adapter configs and owners: finite floats, no coercion of strings (also at load),
the rank cap at the largest useful rank, and per-sample mode indices."""

from __future__ import annotations

import json
import math
import re
import string
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from tnadapt.nn import (
    GlobalTTAdapter,
    MetaTTConfig,
    TeRAAdapter,
    TeRAConfig,
    adapter_context,
    get_adapters,
    load_adapter,
    save_adapter,
    wrap,
)
from tnadapt.tt import TensorTrain, max_ranks, round_tt

F64 = torch.float64

# ---------------------------------------------------------------------- B11: float hyper-parameters

FLOAT_FIELDS = {
    "MetaTTConfig": (lambda **kw: MetaTTConfig(target_modules=["0"], **kw), ["alpha", "init_std"]),
    "TeRAConfig": (lambda **kw: TeRAConfig(target_modules=["0"], **kw), ["alpha", "lambda_init", "factor_scale"]),
    "GlobalTTAdapter": (lambda **kw: GlobalTTAdapter(4, 4, {"layer": 2}, 2, **kw), ["alpha", "init_std"]),
    "TeRAAdapter": (lambda **kw: TeRAAdapter(6, 4, 2, [2, 3], [4], **kw), ["alpha", "lambda_init", "factor_scale"]),
}
CASES = [(owner, field) for owner, (_, fields) in FLOAT_FIELDS.items() for field in fields]


@pytest.mark.parametrize(("owner", "field"), CASES)
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_floats_are_refused(owner, field, value):
    """NaN/Inf used to be accepted and made every output NaN."""
    build, _ = FLOAT_FIELDS[owner]
    with pytest.raises(ValueError, match=rf"^{field}: expected a finite float.*, got {re.escape(repr(value))}$"):
        build(**{field: value})


@pytest.mark.parametrize(("owner", "field"), CASES)
@pytest.mark.parametrize("value", ["nan", "0.5", None, True])
def test_floats_given_as_other_types_are_refused(owner, field, value):
    """``float("nan")`` of a string silently gave NaN; a string, None or a bool is now a TypeError naming the field."""
    build, _ = FLOAT_FIELDS[owner]
    if value is None and (owner, field) == ("GlobalTTAdapter", "init_std"):
        build(**{field: value})  # documented: None lets normal cores use their own default std
        return
    with pytest.raises(TypeError, match=rf"^{field}: expected a finite float.*, got {type(value).__name__} "):
        build(**{field: value})


@pytest.mark.parametrize("init", ["no:nan-no-no", "ze-no:inf-id", "no:-0.1-id-id"])
def test_init_token_stds_must_be_finite_and_non_negative(init):
    with pytest.raises(ValueError, match=r"init: the std in token 'no:[-a-z0-9.]+': expected a finite float >= 0"):
        GlobalTTAdapter(4, 4, {"layer": 2}, 2, init=init)
    with pytest.raises(ValueError, match=r"init: the std in token"):  # refused by the config, before any wrap
        MetaTTConfig(target_modules=["0"], modes=["layer"], init=init)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: MetaTTConfig(target_modules=["0"], rank="8"),
            r"rank: expected an int >= 1 or a list of them, got str",
        ),
        (lambda: MetaTTConfig(target_modules=["0"], rank=[4, 4.5, 4]), r"rank\[1\]: expected an int >= 1, got float"),
        (lambda: MetaTTConfig(target_modules=["0"], rank=[4, 4]), r"rank: expected an int or one rank per bond \(3"),
        (lambda: MetaTTConfig(target_modules=["0"], seed="0"), r"seed: expected an int, got str '0'"),
        (lambda: MetaTTConfig(target_modules=["0"], preset="metatt-5d", heads="2"), r"heads: expected an int >= 1"),
        (lambda: MetaTTConfig(target_modules=["0"], modes=["task"], mode_sizes={"task": "3"}), r"mode_sizes\['task'\]"),
        (lambda: MetaTTConfig(target_modules=["0"], dtype="float33"), r"dtype: expected a floating torch dtype name"),
        (lambda: MetaTTConfig(target_modules=7), r"target_modules: expected a list of module names or a regex"),
        (lambda: TeRAConfig(target_modules=["0"], save_factors="false"), r"save_factors: expected a bool"),
        (lambda: TeRAConfig(target_modules=["0"], zero_vector="1"), r"zero_vector: expected an int, got str"),
        (lambda: TeRAConfig(target_modules=["0"], splits={12: ["3", 4]}), r"splits\[12\]\[0\]: expected an int"),
        (lambda: TeRAAdapter(6, 4, 2, ["2", "3"], [4]), r"in_modes\[0\]: expected an int >= 1, got str '2'"),
        (lambda: TeRAAdapter(6, 4, 2, [2, 3], [4], ranks=[2, 2.0, 2]), r"ranks\[1\]: expected an int >= 1"),
        (lambda: GlobalTTAdapter("4", 4, {"layer": 2}, 2), r"in_features: expected an int >= 1, got str '4'"),
    ],
)
def test_other_fields_are_type_checked_without_coercion(build, message):
    with pytest.raises((TypeError, ValueError), match=message):
        build()


def test_tera_splits_keep_accepting_json_string_keys():
    """JSON object keys are strings, so a saved ``splits`` comes back as ``{"12": [3, 4]}``."""
    assert TeRAConfig(target_modules=["0"], splits={"12": [3, 4]}).splits == {12: [3, 4]}


def tiny(dim: int = 4) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), nn.Linear(dim, dim))


def saved_adapter(tmp_path, config):
    model = wrap(tiny(), config)
    save_adapter(model, tmp_path / "a")
    return tmp_path / "a"


@pytest.mark.parametrize(
    ("config", "where", "field"),
    [
        (MetaTTConfig(target_modules=["0", "2"], rank=2), "config", "alpha"),
        (MetaTTConfig(target_modules=["0", "2"], rank=2), "config", "init_std"),
        (MetaTTConfig(target_modules=["0", "2"], rank=2), "owner", "alpha"),
        (TeRAConfig(target_modules=["0", "2"]), "config", "lambda_init"),
        (TeRAConfig(target_modules=["0", "2"]), "owner", "alpha"),
        (TeRAConfig(target_modules=["0", "2"]), "owner", "factor_scale"),
    ],
)
@pytest.mark.parametrize("value", ["nan", math.nan, math.inf])
def test_load_refuses_non_finite_or_string_floats(tmp_path, config, where, field, value):
    """A hand-edited ``adapter_config.json`` goes through ``from_dict`` / ``owner_from_config``, which validate."""
    directory = saved_adapter(tmp_path, config)
    path = directory / "adapter_config.json"
    data = json.loads(path.read_text())
    target = data["config"] if where == "config" else next(iter(data["groups"].values()))["owner"]
    target[field] = value
    path.write_text(json.dumps(data))  # NaN/Infinity are written as JSON's NaN/Infinity literals
    expected = "finite float"
    with pytest.raises(ValueError, match=rf"{field}: expected a {expected}.*got (str 'nan'|nan|inf)"):
        load_adapter(tiny(), directory)


def test_from_dict_and_from_config_validate():
    cfg = MetaTTConfig(target_modules=["0"], rank=2).to_dict()
    with pytest.raises(TypeError, match=r"alpha: expected a finite float, got str 'nan'"):
        MetaTTConfig.from_dict({**cfg, "alpha": "nan"})
    owner = GlobalTTAdapter(4, 4, {"layer": 2}, 2).config_dict()
    with pytest.raises(ValueError, match=r"alpha: expected a finite float, got nan"):
        GlobalTTAdapter.from_config({**owner, "alpha": math.nan})
    with pytest.raises(TypeError, match=r"ranks: expected an int or a list of 2 ints"):
        GlobalTTAdapter.from_config({**owner, "ranks": ["2", "2"]})
    with pytest.raises(ValueError, match=r"init: unknown token"):
        GlobalTTAdapter.from_config({**owner, "init": "zeros-bogus-zeros"})
    tera = TeRAAdapter(6, 4, 2, [2, 3], [4]).config_dict()
    with pytest.raises(TypeError, match=r"save_factors: expected a bool"):
        TeRAAdapter.from_config({**tera, "save_factors": "false"})


def test_scheduler_growth_noise_must_be_finite():
    from tnadapt.optim import DMRGRankScheduler

    a = GlobalTTAdapter(4, 4, {"layer": 2}, 2, init="no")
    opt = torch.optim.SGD(a.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"growth_noise: expected a finite float >= 0, got inf"):
        DMRGRankScheduler(opt, a, {1: 3}, growth_noise=math.inf)


# ---------------------------------------------------------------------- (a) ranks above the largest useful rank

legs = st.lists(st.integers(1, 5), min_size=2, max_size=5)


@settings(max_examples=60, deadline=None)
@given(shape=legs, data=st.data())
def test_metatt_ranks_are_capped_at_the_largest_useful_rank(shape, data):
    """Bond ``k`` gets ``min(requested, n_1···n_k, n_{k+1}···n_d)``; one warning names both when any bond is capped."""
    from tnadapt.nn import RankClippedWarning

    requested = data.draw(st.lists(st.integers(1, 40), min_size=len(shape) - 1, max_size=len(shape) - 1))
    modes = {f"m{k}": n for k, n in enumerate(shape[1:-1])}
    limit = max_ranks(shape)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        a = GlobalTTAdapter(shape[0], shape[-1], modes, requested, init="no")
    assert a.ranks == (1, *[min(r, m) for r, m in zip(requested, limit)], 1)
    clipped = [w for w in caught if issubclass(w.category, RankClippedWarning)]
    if any(r > m for r, m in zip(requested, limit)):
        assert len(clipped) == 1 and issubclass(RankClippedWarning, UserWarning)
        assert f"requested {requested}" in str(clipped[0].message)
        assert f"largest useful ranks of the TT of legs {tuple(shape)} are {list(limit)}" in str(clipped[0].message)
    else:
        assert not clipped


@settings(max_examples=30, deadline=None)
@given(shape=legs, seed=st.integers(0, 2**16))
def test_a_rank_above_the_cap_adds_no_expressivity(shape, seed):
    """Any train of these legs, whatever its ranks, is exactly a train with ranks <= max_ranks: the cap loses nothing."""
    g = torch.Generator().manual_seed(seed)
    over = [m + 2 for m in max_ranks(shape)]
    cores = [torch.randn(r0, n, r1, generator=g, dtype=F64) for r0, n, r1 in zip([1, *over], shape, [*over, 1])]
    x = TensorTrain(cores)
    rep = round_tt(x, eps=1e-12)
    assert all(r <= m for r, m in zip(rep.tt.bond_dims, max_ranks(shape)))
    torch.testing.assert_close(rep.tt.full(), x.full(), atol=1e-9 * float(x.norm()), rtol=0)


def test_huge_ranks_give_a_warning_and_a_capped_adapter_not_an_allocator_error():
    from tnadapt.nn import RankClippedWarning

    with pytest.warns(RankClippedWarning, match=r"requested \[1000000, 1000000, 1000000\].* are \[8, 16, 8\]"):
        a = GlobalTTAdapter(8, 8, {"layer": 2, "matrix": 2}, 10**6)
    assert a.ranks == (1, 8, 16, 8, 1)
    with pytest.warns(RankClippedWarning, match=r"^shape group 8x8 \(e.g. '0'\): ranks: requested \[100, 100, 100\]"):
        model = wrap(tiny(8), MetaTTConfig(target_modules=["0", "2"], rank=100))
    assert get_adapters(model)[0].ranks == (1, 8, 8, 8, 1)


def test_cores_too_large_to_allocate_raise_a_value_error_naming_them():
    with pytest.raises(ValueError, match=r"^ranks: the cores \(shapes \[\(1, 100000000, 100000000\).*could not be"):
        GlobalTTAdapter(10**8, 10**8, {"layer": 2}, 10**8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match=r"^ranks: the frozen Tucker core and factors .*could not be allocated"):
            TeRAAdapter(120, 120, 2, [10, 12], [10, 12], ranks=[10**6] * 4)


def tera_delta(in_modes, out_modes, ranks, placement, lambdas, seed=1):
    """ΔW (in, out) of one TeRA slot from a dense einsum over the frozen factors of ``ranks`` (no capping)."""
    from tnadapt.nn.tera_factors import random_factors

    core, us = random_factors(in_modes, out_modes, ranks, seed=seed)
    n = len(us)
    r_idx, i_idx = string.ascii_lowercase[:n], string.ascii_uppercase[:n]
    factors = [u * lam if placement == "bond" else lam[:, None] * u for u, lam in zip(us, lambdas)]
    terms = ",".join([r_idx, *(i + r for i, r in zip(i_idx, r_idx))])
    return torch.einsum(f"{terms}->{i_idx}", core, *factors).reshape(math.prod(in_modes), -1)


def lambda_jacobian_rank(in_modes, out_modes, ranks, placement, seed):
    legs = [*in_modes, *out_modes]
    lengths = ranks if placement == "bond" else legs
    g = torch.Generator().manual_seed(seed)
    lambdas = tuple(torch.randn(int(k), generator=g, dtype=F64) for k in lengths)
    jac = torch.autograd.functional.jacobian(
        lambda *lams: tera_delta(in_modes, out_modes, ranks, placement, lams).flatten(), lambdas
    )
    return int(torch.linalg.matrix_rank(torch.cat(jac, dim=1)))


@settings(max_examples=20, deadline=None)
@given(
    in_modes=st.lists(st.integers(1, 3), min_size=1, max_size=2),
    out_modes=st.lists(st.integers(1, 3), min_size=1, max_size=2),
    placement=st.sampled_from(["bond", "physical"]),
    data=st.data(),
)
def test_tera_rank_cap_keeps_the_trainable_family(in_modes, out_modes, placement, data):
    """TeRA caps ``R_n`` at :func:`tucker_max_ranks`; the rank of ``∂ΔW/∂λ`` — the dimension of what the
    trained vectors can reach — is the same for the requested and the capped ranks (for ``bond``, ranks
    above the legs do add directions, so the cap there is higher than ``I_n``)."""
    from tnadapt.nn.tera_factors import tucker_max_ranks

    legs = [*in_modes, *out_modes]
    requested = data.draw(st.lists(st.integers(1, 12), min_size=len(legs), max_size=len(legs)))
    d_in, d_out = math.prod(in_modes), math.prod(out_modes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        owner = TeRAAdapter(d_in, d_out, 1, in_modes, out_modes, ranks=requested, placement=placement)
    capped = list(owner.ranks)
    assert capped == [min(r, m) for r, m in zip(requested, tucker_max_ranks(legs, requested, placement))]
    seed = data.draw(st.integers(0, 2**16))
    assert lambda_jacobian_rank(in_modes, out_modes, capped, placement, seed) == lambda_jacobian_rank(
        in_modes, out_modes, requested, placement, seed
    )


# ---------------------------------------------------------------------- (b) per-sample mode indices


def task_adapter():
    g = torch.Generator().manual_seed(0)
    return GlobalTTAdapter(4, 3, {"layer": 2, "task": 3}, 2, init="no", generator=g)


@pytest.mark.parametrize(("ids", "shown"), [([0, 3, 1], "[3]"), ([-1, 0, 7], "[-1, 7]"), ([5, 5, 5], "[5]")])
def test_out_of_range_per_sample_indices_name_the_mode_size_and_values(ids, shown):
    """Used to be a raw "INDICES element is out of DATA bounds" from index_select."""
    a = task_adapter()
    x = torch.randn(3, 4)
    message = rf"task: per-sample indices {re.escape(shown)} are out of range for mode 'task' of size 3"
    with pytest.raises(ValueError, match=message) as info:
        a(x, layer=0, task=torch.tensor(ids))
    assert isinstance(info.value, IndexError)  # also an IndexError, as the int case always was
    model = wrap(tiny(), MetaTTConfig(target_modules=["0"], preset="metatt-4+1d", mode_sizes={"task": 3}, rank=2))
    with pytest.raises(ValueError, match=message):  # as a keyword of the adapted layer's forward
        model[0](x, task=torch.tensor(ids))
    with pytest.raises(ValueError, match=message), adapter_context(model, task_ids=torch.tensor(ids)):
        pass


@pytest.mark.parametrize(
    ("ids", "error", "message"),
    [
        (torch.tensor([0.0, 1.0, 2.0]), TypeError, r"expected an integer \(batch,\) tensor for mode 'task', got dtype"),
        (torch.tensor([True, False, True]), TypeError, r"got dtype torch.bool"),
        (torch.tensor([[0], [1], [2]]), ValueError, r"expected a \(batch,\) tensor of indices for mode 'task', got"),
        ([0, 1.5, 2], TypeError, r"expected integer indices for mode 'task'"),
        (torch.tensor(1.0), TypeError, r"expected an integer index for mode 'task'"),
    ],
)
def test_index_tensors_of_the_wrong_dtype_or_shape(ids, error, message):
    a = task_adapter()
    with pytest.raises(error, match=message):
        a(torch.randn(3, 4), layer=0, task=ids)
    model = wrap(tiny(), MetaTTConfig(target_modules=["0"], preset="metatt-4+1d", mode_sizes={"task": 3}, rank=2))
    with pytest.raises(error, match=message), adapter_context(model, task_ids=ids):
        pass


def test_in_range_indices_are_unchanged():
    a = task_adapter()
    x = torch.randn(3, 4)
    ids = torch.tensor([2, 0, 1], dtype=torch.int32)
    ref = torch.stack([a(x[i : i + 1], layer=1, task=int(t))[0] for i, t in enumerate(ids)])
    torch.testing.assert_close(a(x, layer=1, task=ids), ref)


def test_accelerator_index_tensors_are_checked_without_a_host_sync(monkeypatch):
    """Off the CPU the check is one ``torch._assert_async`` (never a ``bool()`` / ``.item()``: on the ``meta``
    device either would raise), with a message naming the mode and its size."""
    from tnadapt.nn.validation import check_mode_index

    calls = []
    monkeypatch.setattr(torch, "_assert_async", lambda cond, msg: calls.append((cond.device.type, msg)))
    ids = torch.tensor([0, 5], device="meta")
    assert check_mode_index("task", 3, ids) is ids
    assert calls == [("meta", "task: per-sample indices out of range for mode 'task' of size 3 (valid: [0, 3))")]

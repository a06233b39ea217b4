"""GlobalTTAdapter against dense references: slices, forward, per-sample indices, heads, counts, set_cores."""

from __future__ import annotations

import pytest
import torch
from nn_helpers import record_ops

from tnadapt.nn import GlobalTTAdapter, lora_num_parameters, parse_init
from tnadapt.tt import TensorTrain


def dense_update(adapter: GlobalTTAdapter) -> torch.Tensor:
    """alpha * full ΔW tensor, shape (in, *mode sizes, out) with the head leg folded into out."""
    full = adapter.tt().full() * adapter.alpha
    if adapter.heads:
        full = full.reshape(*full.shape[:-2], adapter.out_features)
    return full


def rand_adapter(dtype=torch.float64, heads=None, modes=None, ranks=3, seed=0, **kw):
    g = torch.Generator().manual_seed(seed)
    modes = modes or {"layer": 3, "matrix": 2}
    n = 2 + len(modes) + (1 if heads else 0)
    return GlobalTTAdapter(
        6, 8, modes, ranks, alpha=0.7, init="-".join(["no:0.5"] * n), heads=heads, dtype=dtype, generator=g, **kw
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("heads", [None, 2, 4])
def test_slices_and_forward_match_dense(dtype, heads):
    a = rand_adapter(dtype, heads=heads)
    full = dense_update(a)
    x = torch.randn(5, 7, 6, dtype=dtype)
    tol = dict(atol=1e-5, rtol=1e-4) if dtype == torch.float32 else dict(atol=1e-12, rtol=1e-10)
    for layer in range(3):
        for m in range(2):
            ref = full[:, layer, m, :]  # (in, out)
            torch.testing.assert_close(a.delta_weight(layer=layer, matrix=m), ref.T, **tol)
            torch.testing.assert_close(a.delta(layer=layer, matrix=m).full(), ref, **tol)
            torch.testing.assert_close(a(x, layer=layer, matrix=m), x @ ref, **tol)
            A, B = a.lora_factors(layer=layer, matrix=m)
            assert A.shape == (3, 6) and B.shape == (8, 3)
            torch.testing.assert_close(B @ A, ref.T, **tol)


def test_per_sample_task_ids_match_dense():
    a = rand_adapter(modes={"layer": 2, "task": 3, "matrix": 2}, ranks=[2, 3, 4, 2])
    full = dense_update(a)
    x = torch.randn(5, 4, 6, dtype=torch.float64)
    tasks = torch.tensor([2, 0, 1, 1, 2])
    y = a(x, layer=1, task=tasks, matrix=0)
    ref = torch.stack([x[b] @ full[:, 1, int(t), 0, :] for b, t in enumerate(tasks)])
    torch.testing.assert_close(y, ref)
    # an int task index and a 2-D input behave like the batched path restricted to one sample
    torch.testing.assert_close(a(x[1:2, 0], layer=1, task=0, matrix=0), x[1:2, 0] @ full[:, 1, 0, 0, :])
    with pytest.raises(ValueError, match="leading batch dim 5"):
        a(x[:3], layer=1, task=tasks, matrix=0)
    with pytest.raises(ValueError, match="mode 'task'"):
        a(x, layer=1, matrix=0)


def test_lotr_is_a_single_flattened_mode():
    # LoTR: one shared in core, one r×r core per (layer, matrix) pair, one shared out core.
    a = GlobalTTAdapter(6, 8, {"layer_matrix": 4 * 2}, ranks=3, init="no-no-no", dtype=torch.float64)
    assert a.core_names == ("in", "layer_matrix", "out")
    assert a.num_parameters() == 6 * 3 + 8 * 9 + 3 * 8
    x = torch.randn(2, 6, dtype=torch.float64)
    torch.testing.assert_close(a(x, layer_matrix=5), x @ a.delta_weight(layer_matrix=5).T)


def test_paper_parameter_counts():
    def count(rank, heads=None):
        return GlobalTTAdapter(768, 768, {"layer": 12, "matrix": 2}, rank, heads=heads, device="meta").num_parameters()

    assert count(8) == 2 * 768 * 8 + (12 + 2) * 8**2 == 13184
    assert count(24) == 44928
    assert count(64) == 155648
    assert count(16, heads=12) == (768 + 64) * 16 + (12 + 2 + 12) * 16**2 == 19968
    assert lora_num_parameters(768, 768, 8, num_layers=12 * 2) == 294912


@pytest.mark.parametrize("init", [None, "ze-id-id-id", "ze-no-no-id", "id-ze-id-id", "or-id-ze-or"])
def test_zero_at_init(init):
    a = GlobalTTAdapter(10, 12, {"layer": 3, "matrix": 2}, 4, init=init, generator=torch.Generator().manual_seed(1))
    assert a.zero_at_init
    for layer in range(3):
        assert torch.count_nonzero(a.delta_weight(layer=layer, matrix=1)) == 0


def test_llama_preset_init_statistics():
    a = GlobalTTAdapter(64, 64, {"layer": 40, "matrix": 30}, 16, init="ze-no-no-id", generator=torch.Generator())
    assert a.init_spec == ("zeros", "normal:0.2", "normal:0.2", "identity")
    for core in a.cores[1:3]:
        assert abs(float(core.detach().std()) - 0.2) < 0.01
    torch.testing.assert_close(a.cores[3][:, :, 0].detach(), torch.eye(16, 64))  # Algorithm 3: eye_ on (r, D)


def test_default_init_trains_every_bond_direction():
    """ze-id-id-id: the output core is the matrix eye(r, D), so a trained slice reaches rank r, not 1."""
    torch.manual_seed(0)
    a = GlobalTTAdapter(12, 10, {"layer": 2, "matrix": 2}, 4)
    torch.testing.assert_close(a.cores[-1][:, :, 0].detach(), torch.eye(4, 10))
    torch.testing.assert_close(a.cores[0][0].detach(), torch.zeros(12, 4))
    opt = torch.optim.Adam(a.parameters(), lr=0.05)
    x, target = torch.randn(64, 12), torch.randn(64, 10)
    for _ in range(30):
        opt.zero_grad()
        (a(x, layer=0, matrix=1) - target).pow(2).mean().backward()
        opt.step()
    s = torch.linalg.svdvals(a.delta_weight(layer=0, matrix=1).detach())
    assert int((s > 1e-3 * s[0]).sum()) == 4, s


def test_orthogonal_and_identity_init():
    a = GlobalTTAdapter(10, 12, {"layer": 3}, [4, 5], init="or-id-or")
    g = a.cores[0].detach().reshape(10, 4)
    torch.testing.assert_close(g.T @ g, torch.eye(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(a.cores[1][:, 2, :].detach(), torch.eye(4, 5))


def test_gradients_reach_every_core_after_one_step():
    torch.manual_seed(0)
    a = GlobalTTAdapter(6, 8, {"layer": 3, "matrix": 2}, 3)  # ze-id-id-id
    opt = torch.optim.SGD(a.parameters(), lr=0.1)
    x, target = torch.randn(4, 6), torch.randn(4, 8)
    for step in range(2):
        opt.zero_grad()
        loss = (a(x, layer=1, matrix=0) - target).pow(2).sum()
        loss.backward()
        grads = [float(c.grad.abs().sum()) for c in a.cores]
        if step == 0:  # zero input core: only it gets gradient at step 0
            assert grads[0] > 0 and grads[1:] == [0.0, 0.0, 0.0]
        opt.step()
    assert all(g > 0 for g in grads)


def test_set_cores_changes_ranks_in_place():
    a = rand_adapter()
    params = list(a.cores)
    loss = a(torch.randn(2, 6, dtype=torch.float64), layer=0, matrix=0).sum()
    loss.backward()
    new = TensorTrain.random(a.shape, ranks=[2, 4, 2], dtype=torch.float32).cores
    a.set_cores(new)
    assert a.ranks == (1, 2, 4, 2, 1)
    assert all(p is q for p, q in zip(params, a.cores))
    assert all(p.grad is None and p.dtype == torch.float64 for p in a.cores)
    torch.testing.assert_close(a.tt().full(), TensorTrain([c.double() for c in new]).full())
    with pytest.raises(ValueError, match="expected 4 cores"):
        a.set_cores(new[:3])
    with pytest.raises(ValueError, match="leg size must stay 3"):
        a.set_cores([new[0], torch.zeros(2, 5, 4), new[2], new[3]])
    with pytest.raises(ValueError, match="left rank"):
        a.set_cores([new[0], torch.zeros(3, 3, 4), new[2], new[3]])


def test_bad_arguments():
    with pytest.raises(ValueError, match="not divisible by heads=5"):
        GlobalTTAdapter(8, 12, {"layer": 2}, 2, heads=5)
    with pytest.raises(ValueError, match="one token per core"):
        GlobalTTAdapter(8, 12, {"layer": 2}, 2, init="ze-id")
    with pytest.raises(ValueError, match="unknown token 'xx'"):
        parse_init("ze-xx-id", 3)
    with pytest.raises(ValueError, match="mode names"):
        GlobalTTAdapter(8, 12, {"out": 2}, 2)
    with pytest.raises(ValueError, match="one rank per bond"):
        GlobalTTAdapter(8, 12, {"layer": 2}, [2, 2, 2])
    a = GlobalTTAdapter(8, 12, {"layer": 2}, 2)
    with pytest.raises(IndexError, match="out of range for mode 'layer' of size 2"):
        a.delta_weight(layer=2)
    with pytest.raises(ValueError, match="unknown mode"):
        a.delta_weight(layer=0, matrix=1)
    with pytest.raises(ValueError, match="in_features=8"):
        a(torch.randn(3, 7), layer=0)


def test_forward_is_one_batched_path_and_never_dense():
    """Per-sample indices: the same ops for any batch size (one gather per mode, one bmm; no loop over samples),
    and no op ever allocates anything of the size of a dense ΔW (in × out)."""
    a = GlobalTTAdapter(64, 48, {"layer": 3, "task": 4, "matrix": 2}, 2, heads=4, init="no-no-no-no-no-no")
    traces = {}
    for batch in (2, 7):
        x, tasks = torch.randn(batch, 3, 64), torch.randint(0, 4, (batch,))
        traces[batch] = record_ops(a, x, layer=1, task=tasks, matrix=0)
        assert max(n for _, n in traces[batch]) < 64 * 48 // 2 + 1
    assert [op for op, _ in traces[2]] == [op for op, _ in traces[7]]
    ops = [op for op, _ in traces[2]]
    assert ops.count("bmm") == 1 and ops.count("index_select") == 1
    # an int index: no batched ops at all
    plain = [op for op, _ in record_ops(a, torch.randn(2, 3, 64), layer=1, task=2, matrix=0)]
    assert "bmm" not in plain and "index_select" not in plain
    # the check can fail: delta_weight does form the dense matrix
    assert max(n for _, n in record_ops(a.delta_weight, layer=1, task=2, matrix=0)) == 64 * 48

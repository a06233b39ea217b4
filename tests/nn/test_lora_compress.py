"""LoRA -> MetaTT compression against peft's own models, exact per-slice errors, and the LoRA round trip."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from nn_helpers import record_ops, tiny_bert
from safetensors.torch import load_file, save_file
from torch import nn

from tnadapt.nn import adapter_context, export_lora, get_container, load_adapter, save_adapter
from tnadapt.nn.lora_compress import compress_lora, read_lora

peft = pytest.importorskip("peft")

F64 = torch.float64
IDS = torch.randint(0, 50, (2, 7), generator=torch.Generator().manual_seed(5))
TARGETS = ["query", "value", "intermediate.dense"]


def outputs(model):
    with torch.no_grad():
        return model(input_ids=IDS).last_hidden_state


def peft_adapter(tmp_path, name, seed, **lora_kwargs):
    """Save a peft LoRA with random (non-zero) factors for tiny BERT; returns (directory, peft model)."""
    kwargs = {"r": 4, "lora_alpha": 8, "target_modules": TARGETS, "lora_dropout": 0.0}
    kwargs.update(lora_kwargs)
    model = peft.get_peft_model(tiny_bert(F64), peft.LoraConfig(**kwargs))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "lora_" in pname:
                p.copy_(torch.randn(p.shape, generator=g, dtype=F64) * 0.3)
    model.eval()
    path = tmp_path / name
    model.save_pretrained(path)
    return path, model


@pytest.fixture(scope="module")
def three_tasks(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lora")
    return [
        peft_adapter(tmp, "t0", 0),
        peft_adapter(tmp, "t1", 1, r=2, lora_alpha=3, use_rslora=True),
        peft_adapter(tmp, "t2", 2, rank_pattern={"value": 3}, alpha_pattern={"query": 5.0}),
    ]


def test_exact_compression_reproduces_every_peft_model(three_tasks):
    model, report = compress_lora(tiny_bert(F64), [d for d, _ in three_tasks])
    assert report.max_relative_error < 1e-12
    assert len(report.slices) == 3 * 2 * 3  # tasks x layers x targets
    assert sorted(report.modes) == ["16x16", "16x32"]
    assert report.modes["16x16"] == {"layer": 2, "task": 3, "matrix": 2}
    for t, (_, peft_model) in enumerate(three_tasks):
        with adapter_context(model, task_ids=t):
            assert torch.allclose(outputs(model), outputs(peft_model), atol=1e-10)
    lora_params = sum(p.numel() for _, m in three_tasks for n, p in m.named_parameters() if "lora_" in n)
    assert report.lora_parameters == lora_params
    assert report.metatt_parameters == sum(o.num_parameters() for o in get_container(model).groups.values())
    assert report.compression_ratio == pytest.approx(lora_params / report.metatt_parameters)


def test_per_task_batch_indices_match_peft(three_tasks):
    model, _ = compress_lora(tiny_bert(F64), [d for d, _ in three_tasks])
    ids = torch.tensor([2, 0])
    with adapter_context(model, task_ids=ids):
        mixed = outputs(model)
    for row, t in enumerate(ids.tolist()):
        assert torch.allclose(mixed[row], outputs(three_tasks[t][1])[row], atol=1e-10)


@pytest.mark.parametrize("criteria", [{"rank": 3}, {"rank": [6, 4, 4, 6]}, {"eps": 0.3}])
def test_truncated_errors_are_exact(three_tasks, criteria):
    dirs = [d for d, _ in three_tasks]
    model, report = compress_lora(tiny_bert(F64), dirs, **criteria)
    loras = [read_lora(d) for d in dirs]
    container = get_container(model)
    for s in report.slices:
        a, b = loras[s.task][s.module]
        dense = b @ a
        layer = model.get_submodule(s.module)
        approx = container.groups[layer.group].delta_weight(**layer.key, task=s.task).detach()
        assert s.norm == pytest.approx(float(dense.norm()), rel=1e-12)
        assert s.error == pytest.approx(float((dense - approx).norm()), rel=1e-8, abs=1e-12)
    if "rank" in criteria:
        caps = criteria["rank"] if isinstance(criteria["rank"], list) else [criteria["rank"]] * 4
        for ranks in report.ranks.values():
            assert all(r <= c for r, c in zip(ranks[1:-1], caps))
    if "eps" in criteria:  # eps holds per shape group (relative to that group's stacked tensor)
        for gname in report.ranks:
            mine = [s for s in report.slices if s.group == gname]
            err = sum(s.error**2 for s in mine) ** 0.5
            assert err <= 0.3 * sum(s.norm**2 for s in mine) ** 0.5 * (1 + 1e-10)
    assert report.max_relative_error > 1e-6  # the truncation is real


def test_rank_cap_above_the_exact_ranks_keeps_them_minimal(three_tasks):
    """A cap larger than needed is exact and gives the same (minimal) ranks as no criterion at all."""
    dirs = [d for d, _ in three_tasks]
    _, exact = compress_lora(tiny_bert(F64), dirs)
    _, capped = compress_lora(tiny_bert(F64), dirs, rank=64)
    assert capped.ranks == exact.ranks
    assert capped.max_relative_error < 1e-12


def test_single_adapter_is_4d_and_round_trips_through_peft(three_tasks, tmp_path):
    directory, peft_model = three_tasks[2]
    model, report = compress_lora(tiny_bert(F64), directory)
    assert report.modes["16x16"] == {"layer": 2, "matrix": 2} and report.max_relative_error < 1e-12
    assert torch.allclose(outputs(model), outputs(peft_model), atol=1e-10)
    export_lora(model, tmp_path / "back")  # the nn helper's exact export
    reloaded = peft.PeftModel.from_pretrained(tiny_bert(F64), tmp_path / "back").eval()
    assert torch.allclose(outputs(reloaded), outputs(peft_model), atol=1e-10)
    # the compressed MetaTT is an ordinary tnadapt adapter: save/load works
    save_adapter(model, tmp_path / "tt")
    assert torch.equal(outputs(load_adapter(tiny_bert(F64), tmp_path / "tt")), outputs(model))


def test_dict_input_missing_modules_and_warm_start_training():
    base = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 6)).double()
    ref = copy.deepcopy(base)
    g = torch.Generator().manual_seed(0)
    t0 = {"0": (torch.randn(2, 6, generator=g, dtype=F64), torch.randn(5, 2, generator=g, dtype=F64))}
    t1 = {
        "0": (torch.randn(1, 6, generator=g, dtype=F64), torch.randn(5, 1, generator=g, dtype=F64)),
        "2": (torch.randn(3, 5, generator=g, dtype=F64), torch.randn(6, 3, generator=g, dtype=F64)),
    }
    model, report = compress_lora(base, [t0, t1])
    assert [(s.module, s.task) for s in report.slices] == [("0", 0), ("0", 1), ("2", 1)]
    x = torch.randn(3, 6, dtype=F64)
    with torch.no_grad():
        ref[0].weight += t1["0"][1] @ t1["0"][0]
        ref[2].weight += t1["2"][1] @ t1["2"][0]
    with adapter_context(model, task_ids=1):
        assert torch.allclose(model(x), ref(x), atol=1e-12)
    with adapter_context(model, task_ids=0):  # module "2" has no LoRA in task 0: a zero slice
        assert torch.allclose(model[2](torch.ones(1, 5, dtype=F64)), model[2].base_layer(torch.ones(1, 5, dtype=F64)))
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and all("tnadapt" in n for n, p in model.named_parameters() if p.requires_grad)
    with adapter_context(model, task_ids=1):
        model(x).sum().backward()
    assert all(p.grad is not None for p in trainable)


def test_errors(three_tasks, tmp_path):
    directory = three_tasks[0][0]
    with pytest.raises(ValueError, match=r"not nn\.Linear \(or Conv1D\) modules"):
        compress_lora(nn.Sequential(nn.Linear(16, 16)), directory)
    model, _ = compress_lora(nn.Sequential(nn.Linear(4, 4)), {"0": (torch.ones(1, 4), torch.ones(4, 1))})
    with pytest.raises(ValueError, match="already wrapped"):
        compress_lora(model, {"0": (torch.ones(1, 4), torch.ones(4, 1))})
    with pytest.raises(ValueError, match="do not fit"):
        compress_lora(nn.Sequential(nn.Linear(4, 4)), {"0": (torch.ones(1, 5), torch.ones(4, 1))})
    with pytest.raises(ValueError, match="disagree on the rank"):
        read_lora({"0": (torch.ones(2, 5), torch.ones(4, 1))})
    with pytest.raises(FileNotFoundError, match="not a directory"):
        read_lora(tmp_path / "nope")
    with pytest.raises(TypeError, match="peft directory"):
        read_lora(3)
    # DoRA, wrong peft type, extra tensors
    bad = tmp_path / "bad"
    bad.mkdir()
    cfg = json.loads((directory / "adapter_config.json").read_text())
    (bad / "adapter_config.json").write_text(json.dumps({**cfg, "use_dora": True}))
    with pytest.raises(ValueError, match="use_dora"):
        read_lora(bad)
    (bad / "adapter_config.json").write_text(json.dumps({**cfg, "peft_type": "IA3"}))
    with pytest.raises(ValueError, match="peft_type 'LORA'"):
        read_lora(bad)
    (bad / "adapter_config.json").write_text(json.dumps(cfg))
    tensors = load_file(directory / "adapter_model.safetensors")
    save_file({**tensors, "base_model.model.pooler.dense.weight": torch.ones(2, 2)}, bad / "adapter_model.safetensors")
    with pytest.raises(ValueError, match="allow_extra"):
        read_lora(bad)
    assert set(read_lora(bad, allow_extra=True)) == set(read_lora(directory))


def test_compression_works_from_the_factors_only():
    """No op allocates even one dense D × D slice, let alone the stacked (D, L, M, T, D) tensor; still exact."""
    d, layers, tasks = 256, 2, 2
    base = nn.ModuleList([nn.ModuleDict({"q": nn.Linear(d, d), "v": nn.Linear(d, d)}) for _ in range(layers)]).double()
    g = torch.Generator().manual_seed(0)
    loras = [
        {
            f"{i}.{m}": (torch.randn(1, d, generator=g, dtype=F64), torch.randn(d, 1, generator=g, dtype=F64))
            for i in range(layers)
            for m in "qv"
        }
        for _ in range(tasks)
    ]
    result = {}
    ops = record_ops(lambda: result.update(out=compress_lora(base, loras)))
    assert max(n for _, n in ops) < d * d
    model, report = result["out"]
    assert report.max_relative_error < 1e-12 and report.ranks["256x256"] == (1, 8, 8, 8, 8, 1)
    owner = get_container(model).groups["256x256"]
    a, b = loras[1]["1.v"]
    torch.testing.assert_close(owner.delta_weight(layer=1, task=1, matrix=1), b @ a)

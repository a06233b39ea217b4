"""``import tnadapt.tt`` loads only torch/numpy/opt_einsum and changes no global state.

One fresh interpreter imports torch, records the loaded modules and a snapshot of every
process-global setting torch, numpy, warnings and logging keep, then runs three stages and reports
the loaded modules after each: ``import tnadapt`` (lazy), ``import tnadapt.tt`` (and ``from
tnadapt.tt import *``), and the non-strategy half of ``tnadapt.testing`` (which must not need
hypothesis).  The module check is an allowlist: any third-party package other than numpy and
opt_einsum that ``import tnadapt.tt`` adds fails it.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

#: Top-level packages ``import tnadapt.tt`` may add beyond the standard library and what torch loaded.
ALLOWED = ("tnadapt", "numpy", "opt_einsum")
#: Never loaded by ``import tnadapt.tt`` (the heavy or optional parts of the project and its extras).
FORBIDDEN = ("transformers", "peft", "matplotlib", "hypothesis", "tnadapt.nn", "tnadapt.optim", "tnadapt.testing")

PROBE = """
import hashlib, json, logging, sys, warnings
import torch

def digest(t):
    return hashlib.sha256(t.numpy().tobytes()).hexdigest()

def state():
    import numpy as np
    values = {
        "default_dtype": torch.get_default_dtype(),
        "default_device": torch.get_default_device() if hasattr(torch, "get_default_device") else None,
        "num_threads": torch.get_num_threads(),
        "num_interop_threads": torch.get_num_interop_threads(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "grad": torch.is_grad_enabled(),
        "inference_mode": torch.is_inference_mode_enabled(),
        "anomaly": torch.is_anomaly_enabled(),
        "matmul_precision": torch.get_float32_matmul_precision(),
        "cuda_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn": (torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic),
        "opt_einsum": (torch.backends.opt_einsum.enabled, torch.backends.opt_einsum.strategy),
        "print_options": sorted(vars(torch._tensor_str.PRINT_OPTS).items()),
        "torch_rng": digest(torch.random.get_rng_state()),
        "numpy_rng": hashlib.sha256(repr(np.random.get_state()).encode()).hexdigest(),
        "numpy_err": sorted(np.geterr().items()),
        "numpy_print": sorted((k, repr(v)) for k, v in np.get_printoptions().items()),
        "warnings": repr(warnings.filters),
        "logging": (logging.root.level, len(logging.root.handlers), sorted(logging.root.manager.loggerDict)),
        "recursion_limit": sys.getrecursionlimit(),
    }
    return {k: repr(v) for k, v in values.items()}

before = state()  # (loads numpy.random, which the snapshot reads, before the baseline is taken)
baseline = sorted(sys.modules)
stages = {}
import tnadapt
stages["tnadapt"] = sorted(sys.modules)
import tnadapt.tt
from tnadapt.tt import *  # every public name resolves
stages["tnadapt.tt"] = sorted(sys.modules)
after = state()
import tnadapt.testing as t
x = t.tt_with_spectra([[1.0, 0.1]])
t.assert_tt_close(x, x)
stages["tnadapt.testing"] = sorted(sys.modules)
print(json.dumps({"baseline": baseline, "stages": stages, "before": before, "after": after,
                  "stdlib": sorted(sys.stdlib_module_names)}))
"""


@pytest.fixture(scope="module")
def probe() -> dict[str, object]:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _offenders(modules: list[str], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == f or m.startswith(f + ".") for f in forbidden))


def _new_packages(probe: dict[str, object], stage: str) -> set[str]:
    """Top-level packages loaded by ``stage`` that neither torch nor the standard library accounts for."""
    stages = probe["stages"]
    assert isinstance(stages, dict)
    baseline = {m.split(".")[0] for m in probe["baseline"]}  # type: ignore[attr-defined]
    stdlib = set(probe["stdlib"])  # type: ignore[call-overload]
    loaded = {m.split(".")[0] for m in stages[stage]}
    return {m for m in loaded - baseline if m not in stdlib and not m.startswith("_")}


def test_import_tt_loads_only_allowed_packages(probe: dict[str, object]) -> None:
    new = _new_packages(probe, "tnadapt.tt")
    assert "tnadapt" in new  # the probe really measured the import
    assert new <= set(ALLOWED), f"import tnadapt.tt pulled in {sorted(new - set(ALLOWED))}"
    stages = probe["stages"]
    assert isinstance(stages, dict)
    offenders = _offenders(stages["tnadapt.tt"], FORBIDDEN)
    assert not offenders, f"import tnadapt.tt pulled in {offenders}"


def test_import_tt_changes_no_global_state(probe: dict[str, object]) -> None:
    before, after = probe["before"], probe["after"]
    assert isinstance(before, dict) and isinstance(after, dict)
    changed = {k: (before[k], after[k]) for k in before if before[k] != after[k]}
    assert not changed, f"import tnadapt.tt changed global state: {changed}"


def test_import_tnadapt_is_lazy(probe: dict[str, object]) -> None:
    stages = probe["stages"]
    assert isinstance(stages, dict)
    assert not _offenders(stages["tnadapt"], ("tnadapt.tt", *FORBIDDEN))


def test_testing_builders_and_assertions_do_not_need_hypothesis(probe: dict[str, object]) -> None:
    stages = probe["stages"]
    assert isinstance(stages, dict)
    assert not _offenders(stages["tnadapt.testing"], ("hypothesis", "transformers", "peft", "matplotlib"))
    assert _new_packages(probe, "tnadapt.testing") <= set(ALLOWED)

"""``import tnadapt.tt`` loads only torch/numpy/opt_einsum and changes no global state.

One fresh interpreter runs three stages and reports the loaded modules after each:
``import tnadapt`` (lazy), ``import tnadapt.tt``, and the non-strategy half of
``tnadapt.testing`` (which must not need hypothesis).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

FORBIDDEN = ("transformers", "peft", "matplotlib", "hypothesis", "tnadapt.nn", "tnadapt.optim", "tnadapt.testing")

PROBE = """
import json, sys
import torch

def state():
    return [str(v) for v in (torch.get_default_dtype(), torch.get_num_threads(),
            torch.are_deterministic_algorithms_enabled(), torch.is_grad_enabled(),
            torch.random.get_rng_state().sum().item())]

stages = {}
before = state()
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
print(json.dumps({"stages": stages, "before": before, "after": after}))
"""


@pytest.fixture(scope="module")
def probe() -> dict[str, object]:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _offenders(modules: list[str], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == f or m.startswith(f + ".") for f in forbidden))


def test_import_tt_is_light_and_changes_no_global_state(probe: dict[str, object]) -> None:
    stages = probe["stages"]
    assert isinstance(stages, dict)
    offenders = _offenders(stages["tnadapt.tt"], FORBIDDEN)
    assert not offenders, f"import tnadapt.tt pulled in {offenders}"
    assert probe["before"] == probe["after"], "import tnadapt.tt changed torch's global state"


def test_import_tnadapt_is_lazy(probe: dict[str, object]) -> None:
    stages = probe["stages"]
    assert isinstance(stages, dict)
    assert not _offenders(stages["tnadapt"], ("tnadapt.tt", *FORBIDDEN))


def test_testing_builders_and_assertions_do_not_need_hypothesis(probe: dict[str, object]) -> None:
    stages = probe["stages"]
    assert isinstance(stages, dict)
    assert not _offenders(stages["tnadapt.testing"], ("hypothesis", "transformers", "peft", "matplotlib"))

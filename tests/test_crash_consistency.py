"""Saves are all-or-nothing under ``kill -9``: the violent tests.

Two kinds of kill, both on real forked processes:

* **every instant, deterministically**: the child counts its file-system calls
  (``open``, ``write`` via the file helper, ``mkdir``, ``link``, ``rename``, ``replace``,
  ``unlink``, ``rmdir``, ``fsync``) and dies with ``os._exit`` right before the ``k``-th one,
  for every ``k`` until a save runs through — with the atomic exchange and with the
  two-rename fallback;
* **at random**: the child signals that it starts a save and the parent ``SIGKILL``\\s it at a
  uniformly random offset inside the save's measured duration, many times over, for adapter
  directories (``save_adapter``) and training states (``save_training_state``).

After every kill the directory must load, and be the old save or the new one (each save
tags every value it writes; a mix shows up as two tags), and the next save must clear what
the killed one left behind.
"""

from __future__ import annotations

import json
import os
import random
import signal
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from tnadapt import atomic
from tnadapt.nn import GlobalTTAdapter, MetaTTConfig, get_adapters, load_adapter, save_adapter, wrap
from tnadapt.optim import load_training_state, save_training_state

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork (POSIX)")

FS_CALLS = ("open", "mkdir", "link", "rename", "replace", "unlink", "rmdir", "fsync", "symlink")


def run_child(body: Callable[[], None], *, die_at: int | None = None, timeout: float = 60.0) -> bool:
    """Run ``body`` in a forked child; with ``die_at`` it dies before its ``die_at``-th file-system call.

    Returns ``True`` when the child finished ``body`` (so ``die_at`` was never reached).
    """
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        code = 3
        try:
            torch.set_num_threads(1)
            if die_at is not None:
                count = [0]
                for name in FS_CALLS:
                    real = getattr(os, name)

                    def counted(*args, _real=real, **kwargs):
                        count[0] += 1
                        if count[0] == die_at:
                            os._exit(9)  # like kill -9: no cleanup, no finally, no atexit
                        return _real(*args, **kwargs)

                    setattr(os, name, counted)
            body()
            code = 0
        finally:
            os._exit(code)
    return _wait(pid, timeout) == 0


def _wait(pid: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.002)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError(f"child {pid} did not finish within {timeout}s (a hang)")


def leftovers(target: Path) -> list[str]:
    return sorted(p.name for p in target.parent.iterdir() if p.name.startswith(f".{target.name}."))


# ---------------------------------------------------------------------- every instant, deterministically
def tagged_files(tag: int) -> dict[str, bytes]:
    body = str(tag).encode() * 2000
    return {"config.json": json.dumps({"tag": tag}).encode(), "weights.bin": body, "sub/extra.bin": body[:100]}


def read_tag(target: Path) -> int:
    """The one tag every file of ``target`` carries; fails on a mix."""
    tag = json.loads((target / "config.json").read_text())["tag"]
    assert (target / "weights.bin").read_bytes() == str(tag).encode() * 2000, "weights of another save"
    assert (target / "sub" / "extra.bin").read_bytes() == (str(tag).encode() * 2000)[:100], "sub/ of another save"
    assert (target / "README.md").read_text() == "user notes", "a file of the user's was lost"
    return tag


@pytest.mark.parametrize("exchange", [True, False], ids=["exchange", "two-rename-fallback"])
def test_write_files_every_crash_point(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(atomic, "_EXCHANGE", None)  # inherited by the forked children
    elif atomic._EXCHANGE is None:
        pytest.fail("no atomic exchange on this platform: the exchange path is untested here")
    target = tmp_path / "save"
    atomic.write_files(target, tagged_files(1))
    (target / "README.md").write_text("user notes")
    old, k, outcomes = 1, 0, {"old": 0, "new": 0}
    while True:
        k += 1
        new = old + 1
        finished = run_child(lambda new=new: atomic.write_files(target, tagged_files(new)), die_at=k)
        loaded = read_tag(atomic.resolve_directory(target))
        assert loaded in (old, new), f"crash point {k}: tag {loaded}, expected {old} or {new}"
        outcomes["new" if loaded == new else "old"] += 1
        old = loaded
        if finished:
            break
    assert k > 10 and outcomes["old"] > 3 and outcomes["new"] >= 1, (k, outcomes)
    print(f"write_files crash points (exchange={exchange}): {k}, outcomes {outcomes}")
    atomic.write_files(target, tagged_files(old + 1))
    assert read_tag(target) == old + 1
    assert leftovers(target) == [], "the next save clears what killed saves left"


def test_new_directory_every_crash_point(tmp_path):
    """A directory that did not exist appears whole or not at all."""
    k = 0
    while True:
        k += 1
        target = tmp_path / f"new{k}"
        finished = run_child(lambda target=target: atomic.write_files(target, tagged_files(7)), die_at=k)
        if os.path.lexists(target):
            (target / "README.md").write_text("user notes")
            assert read_tag(target) == 7
        if finished:
            break
    assert k > 5


# ---------------------------------------------------------------------- at random, with SIGKILL
def _saving_child(save: Callable[[int], None], tag: int) -> tuple[int, int]:
    """Fork a child that writes ``s``, runs ``save(tag)``, writes ``d`` and waits to be killed; ``(pid, pipe)``
    once the child has started its save."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_fd)
            torch.set_num_threads(1)
            os.write(write_fd, b"s")
            save(tag)
            os.write(write_fd, b"d")
            time.sleep(60)
        finally:
            os._exit(0)
    os.close(write_fd)
    assert os.read(read_fd, 1) == b"s"
    return pid, read_fd


def random_kills(save: Callable[[int], None], check: Callable[[], int], *, kills: int, seed: int) -> dict[str, int]:
    """Kill a child at a random instant of ``save(tag)``, ``kills`` times; ``check()`` returns the loaded tag.

    A save's duration is measured in forked children like the killed ones (a child is slower than the parent:
    copy-on-write faults); even kills land uniformly inside that duration, odd ones up to twice it, so both
    outcomes (killed before and after the commit) occur under any machine load.
    """
    rng = random.Random(seed)
    durations = []
    for tag in (1, 2, 3):
        t0 = time.perf_counter()
        pid, fd = _saving_child(save, tag)
        assert os.read(fd, 1) == b"d"
        durations.append(time.perf_counter() - t0)
        os.close(fd)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    span = statistics.median(durations)
    old, outcomes = check(), {"old": 0, "new": 0}
    for i in range(kills):
        new = 100 + i
        pid, fd = _saving_child(save, new)
        time.sleep(rng.uniform(0.0, span) if i % 2 == 0 else rng.uniform(0.5 * span, 2.0 * span))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(fd)
        loaded = check()
        assert loaded in (old, new), f"kill {i}: tag {loaded}, expected {old} (old) or {new} (new)"
        outcomes["new" if loaded == new else "old"] += 1
        old = loaded
    return outcomes


def tagged_model(width: int = 512) -> nn.Module:
    """Two adapted 64×64 layers and a saved ``width``×``width`` head (the payload that makes a save take time)."""
    return wrap(_plain_base(width), MetaTTConfig(target_modules=["0", "1"], rank=8, modules_to_save=["3"]))


def test_save_adapter_random_kills(tmp_path):
    model = tagged_model()
    target = tmp_path / "adapter"
    adapter: GlobalTTAdapter = get_adapters(model)[0]

    def save(tag: int) -> None:
        with torch.no_grad():
            for core in adapter.cores:
                core.fill_(float(tag))
            model[3].weight.fill_(float(tag))
        adapter.alpha = float(tag)  # the config's alpha must travel with the weights
        save_adapter(model, target)

    def check() -> int:
        loaded = load_adapter(_plain_base(), target)
        owner = get_adapters(loaded)[0]
        tag = owner.alpha
        assert all(bool((c == tag).all()) for c in owner.cores), "cores of another save than the config's alpha"
        assert bool((loaded[3].weight == tag).all()), "modules_to_save of another save"
        return int(tag)

    outcomes = random_kills(save, check, kills=60, seed=0)
    print("save_adapter random kills:", outcomes)
    assert outcomes["old"] > 0 and outcomes["new"] > 0, outcomes
    save(1000)
    assert check() == 1000 and leftovers(target) == [] and not [p for p in target.iterdir() if p.name[0] == "."]


def _plain_base(width: int = 512) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 64), nn.Linear(64, width), nn.Linear(width, width))


def test_save_training_state_random_kills(tmp_path):
    params = [nn.Parameter(torch.zeros(256, 256)), nn.Parameter(torch.zeros(64))]
    opt = torch.optim.Adam(params, lr=0.1)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    target = tmp_path / "state"
    target.mkdir()
    (target / "adapter_config.json").write_text("{}")  # a directory shared with other files keeps them

    def save(tag: int) -> None:
        for p in params:
            opt.state[p]["exp_avg"].fill_(float(tag))
        save_training_state(target, opt, extra={"tag": tag})

    def check() -> int:
        fresh = [nn.Parameter(torch.zeros(256, 256)), nn.Parameter(torch.zeros(64))]
        opt2 = torch.optim.Adam(fresh, lr=0.5)
        extra = load_training_state(target, opt2)
        assert extra is not None
        tag = extra["tag"]
        for p in fresh:
            assert bool((opt2.state[p]["exp_avg"] == tag).all()), "optimizer tensors of another save than the JSON"
        assert (target / "adapter_config.json").read_text() == "{}"
        return int(tag)

    outcomes = random_kills(save, check, kills=40, seed=1)
    print("save_training_state random kills:", outcomes)
    assert outcomes["old"] > 0 and outcomes["new"] > 0, outcomes
    save(1000)
    assert check() == 1000 and leftovers(target) == []


def test_epoch_checkpoint_every_crash_point(tmp_path):
    """The fine-tuning checkpoint (adapter/ + training state + COMPLETE in one ``write_checkpoint``, as
    ``tnadapt.finetune.trainer`` writes it): after a crash at any instant the latest complete checkpoint loads whole."""
    from tnadapt.finetune.checkpoint import latest_checkpoint, write_checkpoint
    from tnadapt.nn.serialization import adapter_files
    from tnadapt.optim import training_state_files

    model = tagged_model(width=8)
    adapter = get_adapters(model)[0]
    opt = torch.optim.Adam(adapter.parameters(), lr=0.1)

    def save(epoch: int) -> None:
        with torch.no_grad():
            for core in adapter.cores:
                core.fill_(float(epoch))
        files = {f"adapter/{name}": data for name, data in adapter_files(model).items()}
        files.update(training_state_files(opt, extra={"epoch": epoch}))
        write_checkpoint(tmp_path, epoch, files)

    save(1)
    k = 0
    while True:
        k += 1
        finished = run_child(lambda: save(2), die_at=k)
        latest = latest_checkpoint(tmp_path)
        assert latest is not None
        epoch = load_training_state(latest, torch.optim.Adam(adapter.parameters()))["epoch"]
        owner = get_adapters(load_adapter(_plain_base(width=8), latest / "adapter"))[0]
        assert all(bool((c == epoch).all()) for c in owner.cores), f"crash point {k}: adapter of another epoch"
        assert epoch in (1, 2) and latest.name == f"epoch-00{epoch}"
        if finished:
            break
    assert epoch == 2 and k > 20, k
    save(3)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["epoch-001", "epoch-002", "epoch-003"]


def test_concurrent_saves_to_one_directory(tmp_path):
    """Two processes re-saving one directory (e.g. two DDP ranks that both save) never break each other's saves."""
    target = tmp_path / "shared"
    atomic.write_files(target, tagged_files(1))
    (target / "README.md").write_text("user notes")
    (tmp_path / "link").symlink_to(target)  # a save through a symlink replaces what it points to

    def saver(first: int, where: Path) -> Callable[[], None]:
        return lambda: [atomic.write_files(where, tagged_files(t)) for t in range(first, first + 25)]

    pids = []
    for first, where in ((100, target), (200, tmp_path / "link")):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                saver(first, where)()
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)
    assert [_wait(pid, 60) for pid in pids] == [0, 0], "a save failed while another process saved"
    assert read_tag(target) in (124, 224)
    assert (tmp_path / "link").is_symlink() and read_tag(tmp_path / "link") == read_tag(target)
    assert leftovers(target) == []


def test_nested_saves_inside_a_staged_directory_every_crash_point(tmp_path):
    """Saves nested in a staged directory (their targets are inside the hidden staging folder) are as safe, and
    what they leave beside a killed staging folder is cleared with it."""
    model = tagged_model(width=8)
    adapter = get_adapters(model)[0]
    opt = torch.optim.Adam(adapter.parameters(), lr=0.1)
    target = tmp_path / "run"

    def save(tag: int) -> None:
        with torch.no_grad():
            for core in adapter.cores:
                core.fill_(float(tag))
        with atomic.staged_directory(target) as stage:
            save_adapter(model, stage / "adapter")
            save_training_state(stage, opt, extra={"tag": tag})

    save(1)
    k = 0
    while True:
        k += 1
        finished = run_child(lambda: save(2), die_at=k)
        tag = load_training_state(target, torch.optim.Adam(adapter.parameters()))["tag"]
        owner = get_adapters(load_adapter(_plain_base(width=8), target / "adapter"))[0]
        assert all(bool((c == tag).all()) for c in owner.cores), f"crash point {k}: adapter of another save"
        if finished:
            break
    assert tag == 2 and k > 20, k
    save(3)
    assert [p.name for p in tmp_path.iterdir()] == ["run"], "leftovers of killed nested saves remain"

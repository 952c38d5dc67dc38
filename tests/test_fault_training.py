"""Killed training: SIGKILL (no handler, no last checkpoint) at random steps, then resume.

`test_sigkill_at_random_steps_then_resume`: `clasflow train` (MobileNetV3_small_x0_35, 32 px,
digits fixture, 3 epochs, a checkpoint every epoch) in a subprocess is SIGKILLed at seeded random
global steps spanning the epochs, then resumed with ``-o checkpoints=auto``; every resumed run
finishes with the same final weights as an uninterrupted run. test_train.py covers SIGTERM (which
writes a checkpoint first); here nothing runs at the kill.

`test_sigkill_during_save_checkpoint`: a small process writes big (ResNet50_vd) checkpoints in a
loop with clasflow.engine.checkpoint.save_checkpoint and is SIGKILLed at random moments inside a
save: no half-written checkpoint ever sits under a final name, the previous ones stay loadable and
`latest_checkpoint` never picks a temporary folder.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import CONFIGS, tiny_overrides

ARCH = "MobileNetV3_small_x0_35"
SMALL = [f"ARCHITECTURE.name={ARCH}", "LEARNING_RATE.params.lr=0.02", "save_interval=1"]
EPOCHS = 3
STEP_LINE = re.compile(r"epoch:(\d+) train step:(\d+) ")
KILL_TRIALS = 6  # two per epoch
SEED = 20240611


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONUNBUFFERED": "1"}


def _train_cmd(root: Path, out: Path, *extra: str) -> list[str]:
    over = tiny_overrides(root, classes=10, epochs=EPOCHS) + SMALL + [f"model_save_dir={out}", *extra]
    return [sys.executable, "-m", "clasflow", "train", "-c", str(CONFIGS / "ResNet50_vd.yaml"), "--no-track",
            *sum((["-o", o] for o in over), [])]


def _run(cmd: list[str], timeout: float = 300) -> tuple[int, str]:
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(), timeout=timeout)
    return proc.returncode, proc.stdout


def _run_and_kill_at(cmd: list[str], target: int, steps_per_epoch: int, timeout: float = 300) -> tuple[int | None, str]:
    """Start `cmd`, SIGKILL it once its log reports global step >= target; (step seen at the kill, output)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env())
    lines, killed_at, deadline = [], None, time.monotonic() + timeout
    try:
        for line in proc.stdout:
            lines.append(line)
            m = STEP_LINE.search(line)
            if m and killed_at is None:
                step = int(m.group(1)) * steps_per_epoch + int(m.group(2))
                if step >= target:
                    proc.send_signal(signal.SIGKILL)
                    killed_at = step
            if time.monotonic() > deadline:
                break
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)
    return killed_at, "".join(lines)


def _weights(path: Path) -> dict[str, np.ndarray]:
    import paddle

    return {k: np.asarray(v) for k, v in paddle.load(str(path), return_numpy=True).items()}


def _max_diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    assert a.keys() == b.keys()
    return max(float(np.max(np.abs(a[k].astype(np.float64) - b[k].astype(np.float64)), initial=0.0)) for k in a)


def _final_name_problems(arch_dir: Path) -> list[str]:
    """Checkpoint folders under their final names that do not load completely."""
    import paddle

    from clasflow.engine import checkpoint as ckpt

    problems = []
    if not arch_dir.is_dir():
        return problems
    for folder in sorted(arch_dir.iterdir()):
        if not folder.is_dir() or folder.name.startswith("."):
            continue
        try:
            ckpt.read_meta(folder)
            for name in ("ppcls.pdparams", "ppcls.pdopt"):
                paddle.load(str(folder / name), return_numpy=True)
        except Exception as exc:  # anything unreadable under a final name is a failure
            problems.append(f"{folder.name}: {type(exc).__name__}: {exc}")
    return problems


@pytest.mark.timeout(900)
def test_sigkill_at_random_steps_then_resume(digits_data, tmp_path, fault_record):
    fault_record.plan("training: SIGKILL at a random step, resumed with checkpoints=auto", KILL_TRIALS)
    ref_out = tmp_path / "reference"
    rc, log = _run(_train_cmd(digits_data, ref_out))
    assert rc == 0, log[-3000:]
    steps = [(int(e), int(s)) for e, s in STEP_LINE.findall(log)]
    steps_per_epoch = max(s for _, s in steps) + 1
    assert sorted({e for e, _ in steps}) == list(range(EPOCHS)) and len(steps) == EPOCHS * steps_per_epoch
    reference = _weights(ref_out / ARCH / str(EPOCHS - 1) / "ppcls.pdparams")
    ref_best = _weights(ref_out / ARCH / "best_model" / "ppcls.pdparams")

    rng = random.Random(SEED)
    per_epoch = KILL_TRIALS // EPOCHS
    targets = sorted(t for e in range(EPOCHS) for t in rng.sample(range(e * steps_per_epoch, (e + 1) * steps_per_epoch), per_epoch))
    results = []
    for i, target in enumerate(targets):
        out = tmp_path / f"trial{i}"
        killed_at, kill_log = _run_and_kill_at(_train_cmd(digits_data, out), target, steps_per_epoch)
        row = {"target": target, "killed_at": killed_at, "problems": _final_name_problems(out / ARCH)}
        if killed_at is None:
            row["problems"].append("the run ended before the target step:\n" + kill_log[-2000:])
        rc, resume_log = _run(_train_cmd(digits_data, out, "checkpoints=auto"))
        resumed = re.search(r"resumed from (\S+): continuing at epoch (\d+)", resume_log)
        row["resumed_from"] = resumed.group(1) if resumed else None
        row["redone_steps"] = killed_at - (int(resumed.group(2)) * steps_per_epoch if resumed else 0) if killed_at is not None else None
        if rc != 0:
            row["problems"].append(f"resume exited {rc}:\n{resume_log[-2000:]}")
        else:
            row["max_abs_diff"] = _max_diff(_weights(out / ARCH / str(EPOCHS - 1) / "ppcls.pdparams"), reference)
            row["best_model_diff"] = _max_diff(_weights(out / ARCH / "best_model" / "ppcls.pdparams"), ref_best)
            if row["max_abs_diff"] > 1e-6 or row["best_model_diff"] > 1e-6:
                row["problems"].append(f"final weights differ (max abs {row['max_abs_diff']}, best_model {row['best_model_diff']})")
        results.append(row)

    survived = sum(1 for r in results if not r["problems"])
    fault_record("training: SIGKILL at a random step, resumed with checkpoints=auto", trials=len(results),
                 survived=survived, data_lost=len(results) - survived,
                 note="killed at global steps " + ", ".join(str(r["killed_at"]) for r in results)
                 + f" of {EPOCHS * steps_per_epoch}; work redone per kill (steps) "
                 + ", ".join(str(r["redone_steps"]) for r in results))
    assert len(results) >= 5 and len({t // steps_per_epoch for t in targets}) == EPOCHS
    assert all(not r["problems"] for r in results), json.dumps(results, indent=1, default=str)


# ------------------------------------------------------------------ killed inside save_checkpoint

SAVER = textwrap.dedent("""
    import shutil, sys, time
    from pathlib import Path

    import paddle

    from clasflow.engine import checkpoint as ckpt
    from clasflow.models import build_model

    out = Path(sys.argv[1])
    paddle.seed(0)
    model = build_model("ResNet50_vd", class_num=102)
    opt = paddle.optimizer.Momentum(learning_rate=0.1, momentum=0.9, parameters=model.parameters())
    model(paddle.randn([2, 3, 32, 32])).mean().backward()
    opt.step()
    opt.clear_grad()
    bias = model.fc.bias
    print("ready", flush=True)
    for i in range(1000):
        bias.set_value(paddle.full(bias.shape, float(i)))  # which save a folder holds: fc.bias == epoch
        for name in (str(i), "best_model"):  # a new name, then replacing an existing one
            print(f"begin {name} {i} {time.monotonic()}", flush=True)
            ckpt.save_checkpoint(out / name, model, opt, ckpt.CheckpointMeta(i, 0, i, "h", {}, float(i)))
            print(f"end {name} {i} {time.monotonic()}", flush=True)
        if i >= 2:
            shutil.rmtree(out / str(i - 2), ignore_errors=True)  # bound the disk used
""")
SAVE_TRIALS = 6


def _readline(proc) -> str:
    """The writer's next line (blocking: a select() on the pipe would miss lines already buffered)."""
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"the checkpoint writer exited ({proc.poll()})")
    return line


def _event(line: str) -> tuple[str, str, int, float]:
    what, name, epoch, stamp = line.split()
    return what, name, int(epoch), float(stamp)


def _check_save_folder(folder: Path) -> int:
    """Load a checkpoint completely; returns its epoch (its fc.bias must say the same)."""
    import paddle

    from clasflow.engine import checkpoint as ckpt

    meta = ckpt.read_meta(folder)
    params = paddle.load(str(folder / "ppcls.pdparams"), return_numpy=True)
    paddle.load(str(folder / "ppcls.pdopt"), return_numpy=True)
    with open(folder / "ppcls.pdstates", "rb") as fh:
        import pickle

        pickle.load(fh)
    assert np.all(params["fc.bias"] == meta.epoch), f"{folder}: files of different saves mixed"
    return meta.epoch


@pytest.mark.timeout(600)
def test_sigkill_during_save_checkpoint(tmp_path, fault_record):
    import shutil

    from clasflow.engine import checkpoint as ckpt

    script = tmp_path / "saver.py"
    script.write_text(SAVER)
    rng = random.Random(SEED)
    results = []
    for trial in range(SAVE_TRIALS):
        out = tmp_path / f"t{trial}"
        proc = subprocess.Popen([sys.executable, str(script), str(out)], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True, env=_env())
        try:
            while _readline(proc).strip() != "ready":
                pass
            completed: dict[str, int] = {}  # folder name -> epoch of the last save that finished
            begun, duration, start = 0, None, 0.0
            kill_at_save = rng.randint(2, 5)  # the how-many-th save to kill inside
            fraction = rng.uniform(0.0, 0.9)
            while True:
                what, name, epoch, stamp = _event(_readline(proc))
                if what == "end":
                    completed[name] = epoch
                    duration = stamp - start  # of the latest save
                    continue
                start, begun = stamp, begun + 1
                if begun == kill_at_save:
                    time.sleep(fraction * duration)
                    proc.send_signal(signal.SIGKILL)
                    break
            last = ("begin", name, epoch)
            for line in proc.stdout.read().splitlines():  # what it still wrote before the kill
                if len(line.split()) != 4:
                    continue
                last = _event(line)[:3]
                if last[0] == "end":
                    completed[last[1]] = last[2]
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        inside = last[0] == "begin"  # killed between the start of a save and its return
        victim = last[1:]
        problems = []
        for folder in sorted(p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")):
            try:
                _check_save_folder(folder)
            except Exception as exc:
                problems.append(f"{folder.name} does not load: {type(exc).__name__}: {exc}")
        for name, epoch in completed.items():  # every finished save is still there, complete
            if name.isdigit() and int(name) < victim[1] - 2:
                continue  # rotated away by the writer itself
            folder = out / name
            try:
                got = _check_save_folder(folder)
                if got not in (epoch, victim[1]):
                    problems.append(f"{name} holds epoch {got}, expected {epoch} (or the new {victim[1]})")
            except Exception as exc:
                problems.append(f"previous checkpoint {name} (epoch {epoch}) lost: {type(exc).__name__}: {exc}")
        latest = ckpt.latest_checkpoint(out)
        if latest is None or latest.name.startswith("."):
            problems.append(f"latest_checkpoint picked {latest}")
        else:
            try:
                if _check_save_folder(latest) < max(e for n, e in completed.items() if n.isdigit()):
                    problems.append(f"latest_checkpoint picked the older {latest.name}")
            except Exception as exc:
                problems.append(f"latest_checkpoint picked {latest.name}, which does not load: {exc}")
        leftovers = sorted(p.name for p in out.iterdir() if p.name.startswith("."))
        results.append({"victim": victim, "inside_save": inside, "fraction": round(fraction, 3), "leftovers": leftovers,
                        "problems": problems})
        shutil.rmtree(out, ignore_errors=True)

    survived = sum(1 for r in results if not r["problems"])
    inside = sum(1 for r in results if r["inside_save"])
    fault_record("checkpoints: SIGKILL while save_checkpoint writes (ResNet50_vd, ~190 MB)", trials=len(results),
                 survived=survived, data_lost=len(results) - survived,
                 note=f"{inside} of {len(results)} kills landed inside a save; temporary folders left behind are "
                      f"never taken for checkpoints")
    assert all(not r["problems"] for r in results), json.dumps(results, indent=1)
    assert inside >= len(results) // 2, results  # the injection does hit the writes


REPLACE_WINDOW = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path

    import paddle

    from clasflow.engine import checkpoint as ckpt
    from clasflow.models import build_model

    out = Path(sys.argv[1])
    model = build_model("MobileNetV3_small_x0_35", class_num=10)
    opt = paddle.optimizer.Momentum(learning_rate=0.1, parameters=model.parameters())
    ckpt.save_checkpoint(out / "best_model", model, opt, ckpt.CheckpointMeta(0, 0, 0, "h", {}, 0.5))
    real_replace = os.replace

    def replace_then_die(src, dst):  # the kill lands between moving the old folder away and the new one in
        real_replace(src, dst)
        if ".old-" in str(dst):
            os.kill(os.getpid(), signal.SIGKILL)

    os.replace = replace_then_die
    ckpt.save_checkpoint(out / "best_model", model, opt, ckpt.CheckpointMeta(1, 0, 1, "h", {}, 0.9))
""")


@pytest.mark.timeout(300)
def test_sigkill_between_the_renames_of_a_replacing_save(tmp_path, fault_record):
    """The kill leaves the previous best_model as .best_model.old-PID; clasflow puts it back
    the next time it looks for that checkpoint."""
    fault_record.plan("checkpoints: SIGKILL between the two renames that replace best_model (deterministic)", 1)
    script = tmp_path / "replace.py"
    script.write_text(REPLACE_WINDOW)
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "out")], capture_output=True, text=True,
                          env=_env(), timeout=240)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    from clasflow.engine import checkpoint as ckpt

    try:
        present = ckpt.read_meta(tmp_path / "out" / "best_model" / "ppcls").best_top1 == 0.5  # the previous one
    except Exception:
        present = False
    fault_record("checkpoints: SIGKILL between the two renames that replace best_model (deterministic)", trials=1,
                 survived=int(present), data_lost=int(not present),
                 note="" if present else "the previous best_model was not recovered")
    assert present, sorted(p.name for p in (tmp_path / "out").iterdir())

"""The step watchdog (components/train/watchdog.py) in a bare subprocess, so its `os._exit` is observable: a
stalled step ends the process with the watchdog's code and a message naming the step, the rank and how to
resume; phases (the first step, a checkpoint save) and a run whose steps are slow are given their own bounds."""
from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "components" / "train" / "watchdog.py"
# The module by its path: importing the components.train package would load torch, ~10 s per subprocess here.
LOAD = f"""import importlib.util, time
spec = importlib.util.spec_from_file_location("watchdog", {str(MODULE)!r})
watchdog = importlib.util.module_from_spec(spec)
spec.loader.exec_module(watchdog)
StepWatchdog, EXIT_CODE = watchdog.StepWatchdog, watchdog.EXIT_CODE
"""
EXIT_CODE = 69  # the watchdog's; the subprocess checks the module agrees


def run_script(body: str, timeout: float = 60) -> tuple[subprocess.CompletedProcess, float]:
    script = LOAD + f"assert EXIT_CODE == {EXIT_CODE}\n" + textwrap.dedent(body)
    began = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    return done, time.monotonic() - began


def test_a_stalled_step_exits_the_process_with_a_clear_error():
    done, took = run_script("""
        dog = StepWatchdog(0.5, rank=3, resume_hint=lambda: "checkpoint step-4 in /ckpt", first_limit_s=30).start(3)
        dog.beat(4)
        time.sleep(50)  # step 5 never finishes: a peer is gone
        print("not stopped")
    """)
    assert done.returncode == EXIT_CODE, (done.returncode, done.stdout, done.stderr[-3000:])
    assert "not stopped" not in done.stdout
    assert took < 30, f"the watchdog took {took:.1f} s to stop a step stalled past its 0.5 s bound"
    message = done.stderr
    assert "rank 3" in message and "no progress on step 5 for" in message, message
    assert "another rank or node is gone" in message and "will never complete" in message, message
    assert "rerun the stage; it continues from checkpoint step-4 in /ckpt" in message, message
    assert re.search(r'File "<string>", line \d+ in <module>', message), message  # the main thread's stack


def test_phases_and_slow_steps_get_longer_bounds_and_a_finished_run_is_not_stopped():
    done, _ = run_script("""
        dog = StepWatchdog(0.3, rank=0, resume_hint=str, first_limit_s=20).start(0)
        time.sleep(1.5)  # the first step: warm-up and compilation, bounded by first_limit_s, not the 0.3 s floor
        dog.beat(1)
        time.sleep(0.2)  # a 0.2 s step: the bound becomes max(0.3, 10 x 0.2) = 2 s
        dog.beat(2)
        with dog.phase("checkpoint save", 20):
            time.sleep(2.5)  # longer than any step may take
        time.sleep(0.8)  # slower than the floor, well within 10x the slowest step
        dog.beat(3)
        assert 2 <= dog.bound_s < 15, dog.bound_s  # neither the first step nor the save set the pace
        dog.stop()
        time.sleep(1)
        print("finished")
    """)
    assert done.returncode == 0 and done.stdout.strip() == "finished", (done.returncode, done.stderr[-3000:])


def test_a_stall_during_a_phase_is_bounded_by_the_phase_limit():
    done, _ = run_script("""
        dog = StepWatchdog(0.3, rank=1, resume_hint=str, first_limit_s=20).start(0)
        dog.beat(1)
        with dog.phase("checkpoint save", 1.5):
            time.sleep(50)  # a barrier with a dead peer
    """)
    assert done.returncode == EXIT_CODE, (done.returncode, done.stderr[-3000:])
    assert "no progress on step 2 (checkpoint save)" in done.stderr, done.stderr

"""A step watchdog: a rank that sees no training step finish within a bound stops its process, so the launcher
(torchrun's agent, srun, a pod's restart policy) ends the job instead of leaving it hung.

Why it exists: a node that loses power or its network sends no FIN or RST, and a rank blocked in gloo's
all_reduce with it was still blocked 240 s later although its process group had a 60 s time-out
(tests/faults/test_two_nodes.py). NCCL's own watchdog enforces the process-group time-out on GPUs; this one
works on every backend and needs nothing from the collective that hangs.

The bound is `max(floor_s, slack × the slowest step seen)`: a fixed floor, raised for runs whose steps are
slow. Phases legitimately longer than a step (the first step's warm-up and compilation, a checkpoint save,
validation) run under `phase(name, limit_s)` with their own limit, the process-group time-out in the engine,
which is the bound such phases already have to respect (their barriers and collectives time out there).

No DeepSpeed or torch import: the unit tests exercise it in a bare subprocess.
"""
from __future__ import annotations

import faulthandler
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

# EX_UNAVAILABLE: a peer is gone. Not a traceback's 1, so torchrun's summary shows it was the watchdog; not 75,
# which tasks/stage.py reserves for a network read that a retry may fix
EXIT_CODE = 69
SLACK = 10  # the bound is at least this many times the slowest step seen


class StepWatchdog:
    """`beat(step)` after every finished step; a daemon thread exits the process (`os._exit(EXIT_CODE)`) when
    the bound passes with no beat. `floor_s` 0 disables it."""

    def __init__(self, floor_s: float, rank: int, resume_hint: Callable[[], str], first_limit_s: float,
                 slack: float = SLACK):
        self.floor_s, self.rank, self.resume_hint, self.slack = floor_s, rank, resume_hint, slack
        self.slowest_s = 0.0
        self.step = 0  # the step being worked on (1-based, as the checkpoints count)
        self.last_beat = time.monotonic()
        self.phase_name, self.phase_limit_s = "the first step (warm-up, compilation)", first_limit_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="step-watchdog", daemon=True)

    @property
    def bound_s(self) -> float:
        return max(self.floor_s, self.slack * self.slowest_s)

    def start(self, step: int) -> StepWatchdog:
        self.step, self.last_beat = step + 1, time.monotonic()
        if self.floor_s > 0:
            self._thread.start()
        return self

    def beat(self, done: int) -> None:
        """Step `done` finished: the next one starts its clock now."""
        now = time.monotonic()
        if self.phase_name is None:  # a step that ran under a phase (the first) does not set the pace
            self.slowest_s = max(self.slowest_s, now - self.last_beat)
        self.step, self.last_beat, self.phase_name = done + 1, now, None

    @contextmanager
    def phase(self, name: str, limit_s: float) -> Iterator[None]:
        """Run a phase that may take longer than a step, bounded by `limit_s` (counted from the last beat); the
        next step's clock starts when it ends, so its time neither counts against the step nor sets the pace."""
        self.phase_name, self.phase_limit_s = name, max(limit_s, self.bound_s)
        try:
            yield
        finally:
            self.last_beat, self.phase_name = time.monotonic(), None

    def stop(self) -> None:
        self._stop.set()

    def _watch(self) -> None:
        while not self._stop.wait(min(1.0, self.floor_s / 4)):
            limit = self.bound_s if self.phase_name is None else self.phase_limit_s
            waited = time.monotonic() - self.last_beat
            if waited > limit:
                self._fire(waited, limit)

    def _fire(self, waited: float, limit: float) -> None:
        doing = f"step {self.step}" + (f" ({self.phase_name})" if self.phase_name else "")
        print(f"\nstep watchdog: rank {self.rank} on {socket.gethostname()} made no progress on {doing} for "
              f"{round(waited, 1):g} s (limit {round(limit, 1):g} s: step_timeout_s, at least {self.slack:g}x the "
              "slowest step). Likely cause: another rank or node is gone (crashed, killed, lost its network) and a "
              "collective it was part of will never complete; its own log or the scheduler says which. This rank "
              f"exits with code {EXIT_CODE} so the launcher stops the job. To resume: rerun the stage; it "
              f"continues from {self.resume_hint()}. Where this rank was stuck:", file=sys.stderr, flush=True)
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        sys.stderr.flush()
        os._exit(EXIT_CODE)  # not sys.exit: the main thread is blocked in C and would never see an exception

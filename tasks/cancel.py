"""A backstop for cancelling a deployment's flow run after the Prefect server was away.

The worker hears of a Cancel over Prefect's event stream, falling back to polling the server; when the server is
away longer than that polling tolerates (three failed polls, about 30 s: a server restart on a busy machine), the
worker gives up watching that run ("Cancellation observer failed. Flow run cancellation disabled") and a later
Cancel leaves a pretraining run going for hours. So the flow run polls its own state too, through any outage, and
when a cancel request has waited GRACE_S without the worker acting on it, does what the worker would have done:
marks the run Cancelled and kills its process group (the flow run, `dvc repro` and the stage's processes). With
SIGKILL, not SIGTERM: on SIGTERM Prefect's flow engine reports the run Crashed, forcing that over Cancelled (the
worker arms it to report a cancel instead, over a channel only the worker holds). Nothing is lost to the hard kill:
a stage publishes atomically (its half-written output is never published, and the next run clears it), training
continues from its last checkpoint, and the workspace lock is released with the process.
"""
from __future__ import annotations

import logging
import os
import signal
import threading
import time
from datetime import datetime, timezone

from prefect.client.schemas.objects import State, StateType

POLL_S = 10.0
GRACE_S = 30.0  # the worker's own path acts within seconds; this only catches a request it dropped

log = logging.getLogger(__name__)


def overdue(state: State | None, now: datetime, grace_s: float = GRACE_S) -> bool:
    """A cancel request the worker has left unanswered for `grace_s`."""
    return state is not None and state.type == StateType.CANCELLING and \
        (now - state.timestamp).total_seconds() >= grace_s


def watch_for_cancel() -> None:
    """Start the backstop, once, for a deployment's flow run, as a pipeline run or a scaling sweep opens (the
    `llm-lifecycle/scaling` deployment runs the pipeline as its subflow first: both watch the top flow run, the one
    the worker started as its own process group; the backstop ends with that process). Not for a flow run called
    in-process (`llm-lifecycle run`, tests: no deployment), whose process group is the caller's."""
    from prefect import get_run_logger
    from prefect.runtime import deployment, flow_run

    if not deployment.id or os.getpgid(0) != os.getpid():
        return
    top = str(flow_run.root_flow_run_id)
    if top not in _watched:
        _watched.add(top)
        CancelBackstop(top, logger=get_run_logger()).start()  # its warning shows in Prefect


_watched: set[str] = set()


class CancelBackstop:
    """Polls one flow run's state in a daemon thread; see the module's docstring."""

    def __init__(self, flow_run_id: str, poll_s: float = POLL_S, grace_s: float = GRACE_S,
                 logger: logging.Logger | logging.LoggerAdapter = log):
        self.flow_run_id, self.poll_s, self.grace_s, self.log = flow_run_id, poll_s, grace_s, logger

    def start(self) -> None:
        threading.Thread(target=self._watch, name="cancel-backstop", daemon=True).start()

    def _watch(self) -> None:
        from prefect.client.orchestration import get_client

        while True:
            time.sleep(self.poll_s)
            try:
                with get_client(sync_client=True) as client:
                    state = client.read_flow_run(self.flow_run_id).state
                    if overdue(state, datetime.now(timezone.utc), self.grace_s):
                        self._cancel(client)
                        return
            except Exception as err:  # the server is away (restarting): keep polling until it is back
                log.debug("cancel backstop: cannot read flow run %s: %s", self.flow_run_id, err)

    def _cancel(self, client) -> None:
        from prefect.states import Cancelled

        self.log.warning(f"flow run {self.flow_run_id}: Cancel requested {self.grace_s:g}+ s ago and the worker has "
                         f"not acted on it (it stops watching after losing the Prefect server); stopping here")
        client.set_flow_run_state(self.flow_run_id, Cancelled(
            message="Cancelled by the flow run's own backstop: the worker had stopped watching for cancels "
                    "(the Prefect server was away)"), force=True)
        os.killpg(os.getpgid(0), signal.SIGKILL)

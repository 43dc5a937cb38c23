"""The flow run's cancel backstop (tasks/cancel.py): when a Cancel waits unanswered, it marks the run Cancelled
and stops its whole process group, polling through a server outage first. The server is faked here (the test is
about our own decision and kill); the real stack case is tests/faults/test_stack_faults.py."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta, timezone

import psutil
from prefect.states import Cancelling, Running

from tasks.cancel import _watched, overdue, watch_for_cancel

NOW = datetime(2026, 12, 2, 8, 0, tzinfo=timezone.utc)


def state_at(make, seconds_ago: float):
    state = make()
    state.timestamp = NOW - timedelta(seconds=seconds_ago)
    return state


def test_only_a_cancel_left_waiting_past_the_grace_is_overdue():
    assert overdue(state_at(Cancelling, 31), NOW, grace_s=30)
    assert not overdue(state_at(Cancelling, 5), NOW, grace_s=30)  # the worker may still act on it
    assert not overdue(state_at(Running, 300), NOW, grace_s=30)
    assert not overdue(None, NOW)


def test_no_backstop_outside_a_deployments_flow_run():
    watch_for_cancel()  # no deployment here (as in `llm-lifecycle run` and the tests' in-process flow runs)
    assert not _watched


CHILD = textwrap.dedent("""
    import json, subprocess, sys, time
    from datetime import datetime, timedelta, timezone
    import prefect.client.orchestration as orchestration
    from prefect.states import Cancelling
    from tasks.cancel import CancelBackstop

    record, reads = sys.argv[1], []

    class Server:  # away for the first two polls, then answers that a Cancel has waited 60 s
        def __enter__(self): return self
        def __exit__(self, *exc): return False
        def read_flow_run(self, flow_run_id):
            reads.append(flow_run_id)
            if len(reads) <= 2:
                raise ConnectionError("the server is restarting")
            state = Cancelling()
            state.timestamp = datetime.now(timezone.utc) - timedelta(seconds=60)
            return type("FlowRun", (), {"state": state})()
        def set_flow_run_state(self, flow_run_id, state, force):
            with open(record, "w") as out:
                json.dump({"run": flow_run_id, "state": state.name, "force": force, "reads": len(reads)}, out)

    orchestration.get_client = lambda sync_client: Server()
    stage = subprocess.Popen(["sleep", "120"])  # stands for dvc repro and the stage, in the same process group
    print(stage.pid, flush=True)
    CancelBackstop("run-1", poll_s=0.1, grace_s=30).start()
    time.sleep(120)
""")


def test_an_overdue_cancel_stops_the_process_group_after_polling_through_an_outage(tmp_path):
    record = tmp_path / "state.json"
    flow_run = subprocess.Popen([sys.executable, "-c", CHILD, str(record)], stdout=subprocess.PIPE, text=True,
                                start_new_session=True)  # the worker starts a flow run as its own group
    stage = psutil.Process(int(flow_run.stdout.readline()))
    assert flow_run.wait(timeout=60) == -9  # SIGKILL: on SIGTERM Prefect's engine would report Crashed
    stage.wait(timeout=10)  # gone with its group (not our child: psutil cannot tell its exit code)
    assert json.loads(record.read_text()) == {"run": "run-1", "state": "Cancelled", "force": True, "reads": 3}

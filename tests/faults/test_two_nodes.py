"""Two nodes on one machine: two network namespaces joined by a veth pair, each with its own address, hostname
(a UTS namespace) and /etc/hosts naming both, one rank each. Nothing goes over loopback, so the c10d
rendezvous at `master_addr`, the ranks' MASTER_ADDR (the first node's name) and GLOO_SOCKET_IFNAME are all
really used. Every node runs the command `components.train.launch.command` builds for `nnodes=2`, as on a
cluster.

- the two-node run's losses equal the single-node two-rank run's;
- `llm-lifecycle preflight` passes across the nodes, and fails with a clear message when one is unreachable;
- a node that dies mid-run (its link cut, then every process in it killed: no FIN or RST reaches the other)
  makes the survivor exit with the step watchdog's error (components/train/watchdog.py; `step_timeout_s` 20 s
  here) instead of hanging in gloo's all_reduce, and both nodes relaunched resume from the last checkpoint with
  the uninterrupted losses.

Needs root and `ip netns` (skipped otherwise). Prints the measured times (`-s` shows them) for
docs/reliability.md.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "unit"))  # the training tests' token shards and config
from test_train import config, losses, output_of, write_shards  # noqa: E402

from components.train.launch import LaunchParams, command  # noqa: E402


def _netns_usable() -> str | None:
    """Why the test cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    if not shutil.which("ip") or not shutil.which("unshare"):
        return "needs iproute2's `ip` and util-linux's `unshare`"
    probe = f"llmprobe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None if made.returncode == 0 else f"`ip netns add` fails here: {made.stderr.strip()}"


_WHY_NOT = _netns_usable()
pytestmark = [pytest.mark.heavy, pytest.mark.skipif(_WHY_NOT is not None, reason=str(_WHY_NOT))]

IFACE = "eth-llm"  # the same name on both nodes: one GLOO_SOCKET_IFNAME serves both, as on a cluster
PORT = 29517
RUN_LIMIT_S = 900  # one 12-step launch: ~1 minute on an idle 2-core machine, several on a loaded one
STEP_TIMEOUT_S = 20  # the dead-node run's watchdog floor: a step here takes 1-3 s with its 1 s pause
DETECT_LIMIT_S = 240  # the watchdog's bound (max(20 s, 10x the slowest step), 60 s in a save) with wide margin
# DeepSpeed's CPU shared-memory op, built once into a folder of this test's own: a launch killed while building it
# (a node killed, a time-out) leaves the folder's lock behind, and every later launch using it would wait forever.
EXTENSIONS = {"TORCH_EXTENSIONS_DIR": str(Path.home() / ".cache" / "llm-lifecycle" / "torch_extensions-netns")}
TIMES: dict[str, float] = {}


class Nodes:
    """Two namespaces `<prefix>0/1` named llm-node0/1 at 10.77.0.1/2 on a veth pair."""

    names = ("llm-node0", "llm-node1")
    addrs = ("10.77.0.1", "10.77.0.2")

    def __init__(self, prefix: str):
        self.ns = [f"{prefix}{i}" for i in range(2)]

    def up(self) -> None:
        for ns in self.ns:
            _ip("netns", "add", ns)
            hosts = Path("/etc/netns") / ns / "hosts"  # `ip netns exec` bind-mounts it over /etc/hosts
            hosts.parent.mkdir(parents=True, exist_ok=True)
            hosts.write_text("127.0.0.1 localhost\n" + "".join(f"{a} {n}\n" for a, n in zip(self.addrs, self.names)))
        _ip("link", "add", IFACE, "netns", self.ns[0], "type", "veth", "peer", "name", IFACE, "netns", self.ns[1])
        for ns, addr in zip(self.ns, self.addrs):
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", IFACE)
            _ip("-n", ns, "link", "set", IFACE, "up")
            _ip("-n", ns, "link", "set", "lo", "up")

    def down(self) -> None:
        for ns in self.ns:
            self.kill(ns)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
            shutil.rmtree(Path("/etc/netns") / ns, ignore_errors=True)

    def start(self, node: int, argv: list[str]) -> subprocess.Popen:
        """`argv` on the node, as the node's hostname; output to a pipe."""
        env = {**os.environ, **EXTENSIONS, "PYTHONPATH": str(ROOT), "GLOO_SOCKET_IFNAME": IFACE,
               "DEEPSPEED_TIMEOUT": "1", "OMP_NUM_THREADS": "1"}
        wrapped = ["ip", "netns", "exec", self.ns[node], "unshare", "--uts", "sh", "-c",
                   'hostname "$0" && exec "$@"', self.names[node], *map(str, argv)]
        return subprocess.Popen(wrapped, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)

    def cut(self, node: int) -> None:
        _ip("-n", self.ns[node], "link", "set", IFACE, "down")

    @staticmethod
    def kill(ns: str) -> None:
        pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
        for pid in map(int, pids):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@pytest.fixture(scope="module")
def nodes():
    pair = Nodes(f"llm{os.getpid() % 100000}n")
    try:
        pair.up()
        yield pair
    finally:
        pair.down()
        if TIMES:
            print("\nmeasured:", json.dumps(TIMES))


@pytest.fixture(scope="module")
def tokens(tmp_path_factory) -> Path:
    return write_shards(tmp_path_factory.mktemp("tokens"))


TWO_NODES = LaunchParams(nnodes=2, master_addr=Nodes.names[0], master_port=PORT)


def train_on_both(nodes: Nodes, cfg: Path) -> list[subprocess.Popen]:
    cmd = command(TWO_NODES, "components.train.run", str(cfg))
    return [nodes.start(node, cmd) for node in (0, 1)]


def result_of(outputs: list[str]) -> dict:
    """The result line rank 0 prints, from whichever node it ran on."""
    lines = [line for out in outputs for line in out.splitlines() if line.startswith('{"steps"')]
    assert len(lines) == 1, "exactly one node should print rank 0's result:\n" + "\n".join(outputs)[-4000:]
    return json.loads(lines[0])


@pytest.fixture(scope="module")
def uninterrupted(nodes, tokens, tmp_path_factory) -> dict[int, float]:
    """Losses of 12 steps trained by the two nodes, one rank each."""
    ckpt = tmp_path_factory.mktemp("two-nodes") / "whole"
    began = time.monotonic()
    outputs = [output_of(proc, RUN_LIMIT_S) for proc in train_on_both(nodes, config(tokens, ckpt))]
    TIMES["two_node_run_s"] = round(time.monotonic() - began, 1)
    result = result_of(outputs)
    assert result["world"] == 2 and result["resumed_from"] == 0
    return losses(ckpt)


def test_two_nodes_train_as_one_node_with_two_ranks(uninterrupted, tokens, tmp_path):
    one_node = tmp_path / "one-node"
    cmd = command(LaunchParams(nproc_per_node=2), "components.train.run", str(config(tokens, one_node)))
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **EXTENSIONS, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    output_of(proc, RUN_LIMIT_S)
    expected = losses(one_node)
    assert sorted(uninterrupted) == sorted(expected) == list(range(1, 13))
    for step, loss in expected.items():
        assert uninterrupted[step] == pytest.approx(loss, abs=1e-6), (step, uninterrupted[step], loss)


def preflight_argv(ckpt: Path, timeout: float) -> list[str]:
    return [Path(sys.executable).parent / "llm-lifecycle", "preflight", "--json",
            "--set", "pretrain.launch.nnodes=2", "--set", f"pretrain.launch.master_addr={Nodes.names[0]}",
            "--set", f"pretrain.launch.master_port={PORT}", "--ckpt-dir", ckpt, "--min-disk-gb", "0.001",
            "--bandwidth-params", str(2**20), "--timeout", str(timeout)]


def report_of(out: str) -> dict:
    return json.loads(out[out.index("{"):])


def test_preflight_passes_across_nodes_and_names_an_unreachable_one(nodes, tmp_path):
    procs = [nodes.start(node, preflight_argv(tmp_path, RUN_LIMIT_S)) for node in (0, 1)]
    reports = [report_of(output_of(proc, RUN_LIMIT_S)) for proc in procs]
    for report in reports:
        assert report["ok"] and report["world"] == 2 and report["nodes"] == 2, report
        assert sorted(r["host"] for r in report["ranks"]) == list(Nodes.names)
        assert all(r["bus_gbps"] > 0 and r["bandwidth_mb"] == pytest.approx(4.19, abs=0.01) for r in report["ranks"])
    TIMES["preflight_bus_gbps"] = round(min(r["bus_gbps"] for r in reports[0]["ranks"]), 3)

    nodes.cut(1)  # node 1 unplugged: node 0 waits at the rendezvous for a node that never comes
    try:
        began = time.monotonic()
        lonely = nodes.start(0, preflight_argv(tmp_path, 30))
        out, _ = lonely.communicate(timeout=RUN_LIMIT_S)
        TIMES["preflight_unreachable_s"] = round(time.monotonic() - began, 1)
    finally:
        _ip("-n", nodes.ns[1], "link", "set", IFACE, "up")
    assert lonely.returncode == 1, out[-4000:]
    problem = report_of(out)["problems"][0]
    assert problem.startswith("the 2 ranks did not all join and all-reduce within 30 s"), problem
    assert f"reach {Nodes.names[0]} on port {PORT}" in problem and "GLOO_SOCKET_IFNAME" in problem
    assert "run the same preflight command on each of them" in problem


def test_a_dead_node_stops_the_other_in_bounded_time_and_both_resume(nodes, uninterrupted, tokens, tmp_path):
    ckpt = tmp_path / "broken"
    # The pause keeps the run in steps 5-8 for seconds, so the node dies before the step-8 checkpoint.
    procs = train_on_both(nodes, config(tokens, ckpt, ckpt_every=4, step_pause_s=1.0, step_timeout_s=STEP_TIMEOUT_S))
    deadline = time.monotonic() + RUN_LIMIT_S
    while not ((ckpt / "latest").exists() and (ckpt / "latest").read_text() == "step-4"):
        assert all(p.poll() is None for p in procs), [p.communicate()[0][-3000:] for p in procs]
        assert time.monotonic() < deadline, "no step-4 checkpoint in time"
        time.sleep(0.05)
    nodes.cut(1)  # power loss: the link goes first, so no FIN/RST tells node 0 anything
    nodes.kill(nodes.ns[1])
    died = time.monotonic()
    try:
        out, _ = procs[0].communicate(timeout=DETECT_LIMIT_S)
    except subprocess.TimeoutExpired:
        nodes.kill(nodes.ns[0])
        pytest.fail(f"node 0 still running {DETECT_LIMIT_S} s after node 1 died: it hangs instead of failing")
    finally:
        procs[1].communicate(timeout=30)
        _ip("-n", nodes.ns[1], "link", "set", IFACE, "up")
    TIMES["dead_node_detected_s"] = round(time.monotonic() - died, 1)
    assert procs[0].returncode != 0, out[-4000:]
    assert "components.train.run FAILED" in out, out[-4000:]  # torchrun's summary names the failed ranks
    assert re.search(r"step watchdog: rank \d on llm-node0 made no progress on step \d", out), out[-4000:]
    assert "rerun the stage; it continues from checkpoint step-4" in out, out[-4000:]
    assert (ckpt / "latest").read_text() == "step-4" and max(losses(ckpt)) < 12

    began = time.monotonic()
    outputs = [output_of(proc, RUN_LIMIT_S) for proc in train_on_both(nodes, config(tokens, ckpt, ckpt_every=4))]
    TIMES["resume_run_s"] = round(time.monotonic() - began, 1)
    assert result_of(outputs)["resumed_from"] == 4
    resumed = losses(ckpt)
    assert sorted(resumed) == list(range(1, 13))
    for step, loss in uninterrupted.items():
        assert resumed[step] == pytest.approx(loss, abs=1e-6), (step, resumed[step], loss)

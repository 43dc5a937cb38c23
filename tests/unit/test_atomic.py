"""Atomic publication: readers see the old output or the new one, never a half-written one, and never none."""
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from components.storage import atomic, staged_dir


def test_success_replaces_the_output(tmp_path):
    final = tmp_path / "data" / "stage"
    with staged_dir(final) as staging:
        (staging / "a").write_text("1")
        assert not final.exists()  # nothing visible until the stage finishes
    with staged_dir(final) as staging:
        (staging / "b").write_text("2")
    assert sorted(p.name for p in final.iterdir()) == ["b"]
    assert [p.name for p in final.parent.iterdir()] == ["stage"]


def test_the_swap_is_one_atomic_exchange_here(tmp_path):
    """On this filesystem the two-rename fallback (and its window) is not used at all."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (a / "from_a").touch(), (b / "from_b").touch()
    assert atomic._exchange(a, b)
    assert [p.name for p in a.iterdir()] == ["from_b"] and [p.name for p in b.iterdir()] == ["from_a"]


def test_failure_keeps_the_last_good_output_and_leaves_no_staging(tmp_path):
    final = tmp_path / "stage"
    with staged_dir(final) as staging:
        (staging / "good").write_text("good")
    with pytest.raises(RuntimeError), staged_dir(final) as staging:
        (staging / "half").write_text("half")
        raise RuntimeError("killed midway")
    assert [p.name for p in final.iterdir()] == ["good"]
    assert [p.name for p in tmp_path.iterdir()] == ["stage"]


def test_leftovers_of_a_killed_run_are_cleared(tmp_path):
    final = tmp_path / "stage"
    leftover = tmp_path / ".staging-stage-deadbeef"
    leftover.mkdir()
    (leftover / "half").write_text("half")
    with staged_dir(final) as staging:
        (staging / "x").write_text("x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stage"]


# --- kill -9 at each point of a publication, in a real child process --------------------------------------------

def publish_and_die(final, kill_at: str, exchange: bool = True) -> None:
    """In a child process: publish a new output over `final` (which holds `old`), SIGKILL itself at `kill_at`."""
    script = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from components.storage import atomic
        die = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
        real_exchange, real_rename = atomic._exchange, Path.rename
        if {kill_at!r} == "mid-write":
            with atomic.staged_dir(Path({str(final)!r})) as staging:
                (staging / "new").write_text("half")
                die()
        if {kill_at!r} == "after-exchange":
            atomic._exchange = lambda a, b: real_exchange(a, b) and die()
        if not {exchange!r}:
            atomic._exchange = lambda a, b: False
        if {kill_at!r} == "between-renames":
            def rename(self, target):  # the first rename moves the output aside; die before the second
                real_rename(self, target)
                if ".old-" in str(target):
                    die()
            Path.rename = rename
        with atomic.staged_dir(Path({str(final)!r})) as staging:
            (staging / "new").write_text("new")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          env=os.environ | {"PYTHONPATH": os.getcwd()})
    assert proc.returncode == -signal.SIGKILL, f"the child was meant to die at {kill_at}: {proc.stderr}"


@pytest.fixture
def published(tmp_path):
    final = tmp_path / "stage"
    with staged_dir(final) as staging:
        (staging / "old").write_text("old")
    return final


def listing(folder):
    return sorted(p.name for p in folder.iterdir())


def test_kill_between_the_two_renames_loses_nothing(published):
    """The data-loss window of the two-rename fallback: the output is moved aside, the new one not yet in place."""
    publish_and_die(published, "between-renames", exchange=False)
    assert not published.exists()  # the window: only the moved-aside output and the complete new one
    assert sorted(p.name.split("-")[0] for p in published.parent.iterdir()) == [".old", ".staging"]
    message = atomic.recover(published)
    assert "restored" in message and listing(published) == ["old"]  # the last good output, as dvc.lock records
    assert listing(published.parent) == ["stage"]  # the complete new output went with the killed run: it reruns


def test_the_next_publication_after_a_kill_between_renames_starts_from_the_old_output(published):
    publish_and_die(published, "between-renames", exchange=False)
    with staged_dir(published) as staging:  # a rerun: recovery first, so a failing rerun still leaves `old`
        assert listing(published) == ["old"]
        (staging / "newer").write_text("newer")
    assert listing(published) == ["newer"] and listing(published.parent) == ["stage"]


@pytest.mark.parametrize("kill_at, expected", [("mid-write", ["old"]), ("after-exchange", ["new"])])
def test_kill_during_an_atomic_publication_leaves_old_or_new(published, kill_at, expected):
    publish_and_die(published, kill_at)
    assert listing(published) == expected  # whole: never a mix, never missing
    assert atomic.recover(published).startswith("removed 1 leftover")
    assert listing(published.parent) == ["stage"] and listing(published) == expected

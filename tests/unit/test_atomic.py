"""Atomic publication: readers see the old output or the new one, never a half-written one."""
import pytest

from components.storage import staged_dir


def test_success_replaces_the_output(tmp_path):
    final = tmp_path / "data" / "stage"
    with staged_dir(final) as staging:
        (staging / "a").write_text("1")
        assert not final.exists()  # nothing visible until the stage finishes
    with staged_dir(final) as staging:
        (staging / "b").write_text("2")
    assert sorted(p.name for p in final.iterdir()) == ["b"]
    assert [p.name for p in final.parent.iterdir()] == ["stage"]


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

"""The one atomic-write helper (mofdft_jax.atomic_io)."""

import pytest

from mofdft_jax.atomic_io import (atomic_path, pending_temporaries, remove_stale_temporaries,
                                    write_bytes_atomic, write_text_atomic)


def test_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "a.json"
    write_text_atomic(path, "one")
    write_bytes_atomic(path, b"two")
    assert path.read_bytes() == b"two"
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.json"]


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_an_error_while_writing_keeps_the_old_file(tmp_path, error):
    path = tmp_path / "a.txt"
    path.write_text("old")
    with pytest.raises(error):
        with atomic_path(path) as tmp:
            tmp.write_text("half")
            assert str(tmp) in pending_temporaries() and tmp.name.startswith(".a.txt.tmp-")
            raise error("interrupted")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"] and pending_temporaries() == []


def test_stale_temporaries_of_killed_writers_are_removed(tmp_path):
    (tmp_path / ".x.h5.tmp-12-ab").write_text("")
    (tmp_path / "x.h5").write_text("")
    assert remove_stale_temporaries(tmp_path) == [".x.h5.tmp-12-ab"]
    assert [p.name for p in tmp_path.iterdir()] == ["x.h5"]

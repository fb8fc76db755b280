"""Two commands never write into one folder at once: train.py's run folder and the --output of
test.py, predict.py and scripts.score are held (scripts.files.FolderLock) while they write, and a
second command into the same folder is refused in one line naming the first. A lock is never
left behind, even by a process killed outright."""
import contextlib
import io
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import predict
import test as test_script
import train
from scripts import score
from scripts.bfnet import Networks
from scripts.checkpoint import save_best
from scripts.config import ConfigError, RunConfig
from scripts.files import LOCK_FILE, FolderLock
from tests.conftest import ROOT


def test_a_folder_held_by_one_command_is_refused_to_another_naming_the_first(tmp_path):
    folder = tmp_path / "made" / "out"
    with FolderLock(folder, "--output"):
        assert folder.is_dir() and (folder / LOCK_FILE).is_file()
        with pytest.raises(ConfigError) as refused:
            FolderLock(folder, "--output").__enter__()  # another open file: as another process
        message = str(refused.value)
        assert message.startswith(f"--output {folder} is being written by another command (process {os.getpid()} "
                                  f"on {socket.gethostname()}, since ")
        assert message.endswith(": wait until it ends, or choose another --output") and "\n" not in message
        (folder / "result.txt").write_text("kept")
    assert not (folder / LOCK_FILE).exists() and (folder / "result.txt").is_file()  # the lock goes, results stay
    with FolderLock(folder, "--output"):  # free again
        pass


def test_a_folder_the_lock_made_and_nothing_was_written_into_goes_again(tmp_path):
    with FolderLock(tmp_path / "a" / "b", "--output"):
        pass
    assert list(tmp_path.iterdir()) == []  # b and the parent a it made: a refused or failed command leaves nothing
    (tmp_path / "there").mkdir()
    with FolderLock(tmp_path / "there", "--output"):
        pass
    assert (tmp_path / "there").is_dir()  # a folder the user had stays


def test_a_command_killed_outright_leaves_no_lock(tmp_path):
    """SIGKILL: its lock file stays on disk, but the system has released the lock."""
    code = ("import os, sys; from scripts.files import FolderLock; FolderLock(sys.argv[1], '--output').__enter__(); "
            "os.kill(os.getpid(), 9)")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "out")], cwd=ROOT, timeout=120)
    assert done.returncode == -signal.SIGKILL and (tmp_path / "out" / LOCK_FILE).is_file()
    with FolderLock(tmp_path / "out", "--output"):
        pass


def test_a_failed_lock_leaves_no_folder_and_a_file_system_without_locks_is_noted(tmp_path, monkeypatch, capsys):
    import errno

    from scripts import files
    real_open = os.open
    monkeypatch.setattr(files.os, "open", lambda *a: (_ for _ in ()).throw(PermissionError(13, "Permission denied")))
    with pytest.raises(ConfigError, match="cannot write in this folder \\(Permission denied\\)"):
        FolderLock(tmp_path / "a" / "b", "--output").__enter__()
    assert list(tmp_path.iterdir()) == []  # the folders it made went again
    monkeypatch.setattr(files.os, "open", real_open)

    def no_locks(fd, how):  # NFS without its lock service
        raise OSError(errno.ENOLCK, "No locks available")
    monkeypatch.setattr(files.fcntl, "flock", no_locks)
    with FolderLock(tmp_path / "out", "--output"):  # not refused: the command goes on, unguarded, and says so
        (tmp_path / "out" / "result.txt").write_text("written")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["result.txt"]
    assert capsys.readouterr().err.startswith(f"note: cannot lock {tmp_path / 'out' / LOCK_FILE} (No locks "
                                              f"available): another command writing into {tmp_path / 'out'} at the "
                                              f"same time would not be refused")


def test_a_lock_file_another_user_left_is_replaced_not_a_refusal(tmp_path, monkeypatch):
    """A group's shared folder: the lock file of a colleague's command that was killed outright,
    which this user cannot write. No command holds it, so it is replaced by one of this user's."""
    from scripts import files
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK_FILE).write_text('{"pid": 1, "host": "elsewhere", "since": "yesterday", "command": "python test.py"}')
    real_open = os.open

    def as_another_user(path, flags, *mode):  # (tests run as root, who may write anything)
        if flags & os.O_RDWR and os.path.exists(path) and "elsewhere" in open(path).read():
            raise PermissionError(13, "Permission denied")
        return real_open(path, flags, *mode)
    monkeypatch.setattr(files.os, "open", as_another_user)
    with FolderLock(out, "--output"):
        assert f'"pid": {os.getpid()}' in (out / LOCK_FILE).read_text()
        with pytest.raises(ConfigError, match="is being written by another command"):
            FolderLock(out, "--output").__enter__()
    assert list(out.iterdir()) == []


def test_a_lock_file_that_cannot_be_read_names_its_owner_and_a_link_is_never_followed(tmp_path, monkeypatch):
    from scripts import files
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK_FILE).write_text("{}")
    real_open, real_unlink = os.open, Path.unlink

    def unreadable(path, flags, *mode):  # a colleague's file of mode 0600
        if Path(path) == out / LOCK_FILE:
            raise PermissionError(13, "Permission denied")
        return real_open(path, flags, *mode)
    monkeypatch.setattr(files.os, "open", unreadable)
    owner = __import__("pwd").getpwuid(os.getuid()).pw_name
    with pytest.raises(ConfigError, match=f"its lock file {out / LOCK_FILE} is {owner}'s and cannot be read here: "
                                          f"if no command of theirs writes there any more, they \\(or an "
                                          f"administrator\\) delete it"):
        FolderLock(out, "--output").__enter__()

    def read_only(path, flags, *mode):  # a colleague's file of mode 0644 in a sticky folder (as /tmp)
        if Path(path) == out / LOCK_FILE and flags & os.O_RDWR:
            raise PermissionError(13, "Permission denied")
        return real_open(path, flags, *mode)
    monkeypatch.setattr(files.os, "open", read_only)
    monkeypatch.setattr(Path, "unlink", lambda self, missing_ok=False: (_ for _ in ()).throw(PermissionError(1, "no")))
    with FolderLock(out, "--output"):  # not ours to replace, but no one holds it: locked as it is
        with pytest.raises(ConfigError, match="is being written by another command"):
            FolderLock(out, "--output").__enter__()
    monkeypatch.setattr(Path, "unlink", real_unlink)
    monkeypatch.setattr(files.os, "open", real_open)

    (out / LOCK_FILE).unlink()
    (tmp_path / "victim.txt").write_text("precious")
    (out / LOCK_FILE).symlink_to(tmp_path / "victim.txt")  # planted by someone who may write there
    with pytest.raises(ConfigError, match=f"{out / LOCK_FILE} is a link, not a lock file of this project: delete it"):
        FolderLock(out, "--output").__enter__()
    assert (tmp_path / "victim.txt").read_text() == "precious"


def test_a_lock_file_replaced_under_a_command_is_taken_anew_and_left_to_its_new_owner(tmp_path, monkeypatch):
    """Between one command's open and lock, the holder releases (removes the file) and a third
    command makes a new one: the lock taken on the removed file is no lock, so it tries again.
    And at release a command removes its own lock file only."""
    from scripts import files
    out = tmp_path / "out"
    real_flock, calls = files.fcntl.flock, []

    def released_meanwhile(fd, how):
        calls.append(fd)
        if len(calls) == 1:  # the file this opened goes, another takes its place
            (out / LOCK_FILE).unlink()
            (out / LOCK_FILE).write_text("")
        return real_flock(fd, how)
    monkeypatch.setattr(files.fcntl, "flock", released_meanwhile)
    with FolderLock(out, "--output"):
        assert len(calls) == 2 and f'"pid": {os.getpid()}' in (out / LOCK_FILE).read_text()
        (out / LOCK_FILE).unlink()
        (out / LOCK_FILE).write_text("another command's")
    assert (out / LOCK_FILE).read_text() == "another command's"


def one_line_refusal(main, argv):
    """``main(argv)`` in this process: exit status 2 and one line saying the folder is held."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), \
            pytest.raises(SystemExit) as info:
        main([*map(str, argv)])
    lines = [line for line in err.getvalue().splitlines() if line.strip() and not line.startswith("note:")]
    assert info.value.code == 2 and len(lines) == 1, err.getvalue()
    assert "is being written by another command (process" in lines[0], lines[0]
    return lines[0]


def test_every_command_that_writes_a_folder_is_refused_while_another_writes_it(real_data, tmp_path):
    """train.py (a run folder: its checkpoints would be mixed), test.py and scripts.score (their
    pictures and summaries), predict.py (its predictions.csv): refused before any work, and what
    the holder wrote is untouched."""
    run = tmp_path / "o" / "DRIVE_AV" / "default"
    beside = run.parent / f".default{LOCK_FILE}"  # the run folder itself appears with the first checkpoint
    with FolderLock(run, "--job_name", lock_file=beside):
        line = one_line_refusal(train.main, ["--data-root", real_data, "--epochs", "1", "--image-size", 64, 64,
                                             "--base-width", 4, "--output-root", tmp_path / "o", "--runs-dir",
                                             tmp_path / "runs", "--cache-dir", tmp_path / "c", "--device", "cpu"])
        assert line.startswith(f"error: --output-root / --job_name {run} is being written") and list(run.parent.iterdir()) == [beside]
        assert not (tmp_path / "c").exists()  # refused before any photograph was decoded
    # A run of this name in another --output-root, writing its curves where this one would set them aside:
    with FolderLock(tmp_path / "runs" / "DRIVE_AV_default", "--runs-dir"):
        line = one_line_refusal(train.main, ["--data-root", real_data, "--epochs", "1", "--image-size", 64, 64,
                                             "--base-width", 4, "--output-root", tmp_path / "o2", "--runs-dir",
                                             tmp_path / "runs", "--cache-dir", tmp_path / "c", "--device", "cpu"])
        assert line.startswith(f"error: --runs-dir / --job_name {tmp_path / 'runs' / 'DRIVE_AV_default'} is being")
        assert not (tmp_path / "o2").exists()
    weights = tmp_path / "weights"
    save_best(weights, Networks("sigmoid", 4), RunConfig(base_width=4, image_size=(64, 64)), 1, 0.5)
    out = tmp_path / "out"
    with FolderLock(out, "--output"):
        (out / "summary.json").write_text("{}")  # the holder's
        one_line_refusal(test_script.main, ["--load", weights, "--data-root", real_data, "--output", out,
                                            "--cache-dir", tmp_path / "c", "--device", "cpu"])
        one_line_refusal(predict.main, ["--weights", weights, "--input", real_data / "DRIVE_AV" / "test" / "images",
                                        "--output", out, "--device", "cpu"])
        one_line_refusal(score.main, ["--dataset", "DRIVE_AV", "--predictions", weights, "--data-root", real_data,
                                      "--output", out])
        assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE, "summary.json"]
        assert (out / "summary.json").read_text() == "{}"

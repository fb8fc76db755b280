"""Writing files safely: every file goes to a temporary name first and is renamed into place (a
crash or a full disk leaves the earlier file), and output folders are checked before any work
is done for them; what cannot be written is one line (ConfigError) naming the file or option."""
import contextlib
import csv
import errno
import io
import json
import os
import re
import socket
import sys
import tempfile
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, FolderLock holds nothing
    fcntl = None

from PIL import Image

from .config import ConfigError


class WriteError(ConfigError):
    """A file that could not be written (a full disk, a quota, a read-only file system): one line,
    and the earlier file of that name, if any, is kept (every write goes to a temporary file first).
    ``reason``: the system's words alone, for a caller that says more of what is kept."""

    def __init__(self, message, reason=None):
        super().__init__(message)
        self.reason = reason or message


def write_failed(path, exc, kept=None) -> WriteError:
    """The WriteError of ``exc`` (OSError; torch.save reports a full disk as a RuntimeError);
    ``kept``: what is left as it was, if not the earlier file of that name."""
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else (str(exc).splitlines() or [repr(exc)])[0]
    if kept is None:
        kept = f"an earlier {Path(path).name} there is kept" if os.path.exists(path) else "nothing of it was left there"
    return WriteError(f"cannot write {path} ({reason}); {kept}", reason)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()  # read once: os.umask is process-wide and not thread-safe to query


def make_folder(path, option: str) -> Path:
    """Create the output folder ``path`` (with parents), or one ConfigError line naming
    ``option`` when it cannot be or cannot be written in: a file of that name, a file on the way,
    no permission (an existing read-only folder too, before anything is computed for it)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ConfigError(f"{option} {path}: a file of that name exists; give a folder") from None
    except OSError as exc:
        raise ConfigError(f"{option} {path}: cannot create this folder ({exc.strerror or exc})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"{option} {path}: cannot write in this folder ({why_not_writable(path)})")
    return path


def why_not_writable(folder) -> str:
    """'a read-only file system' where the folder's file system is mounted so, else 'no permission'."""
    read_only = hasattr(os, "statvfs") and os.statvfs(folder).f_flag & os.ST_RDONLY
    return "a read-only file system" if read_only else "no permission"


def check_folder(path, option: str):
    """One ConfigError line when ``path`` cannot become a folder this process writes into (a file
    of that name, or on the way, or no permission), without creating anything."""
    for p in (Path(path), *Path(path).parents):
        if p.exists():
            if not p.is_dir():
                raise ConfigError(f"{option}: {p} is a file; give a folder")
            if not os.access(p, os.W_OK | os.X_OK):
                raise ConfigError(f"{option}: cannot write in {p} ({why_not_writable(p)})")
            return


def atomic_write(path, write):
    """Call ``write(tmp_path)`` and rename the result onto ``path``: a crash mid-write leaves
    any previous ``path`` intact. The file gets the usual permissions (0666 less the umask),
    not the 0600 of a temporary file."""
    path, tmp = Path(path), None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
        os.close(fd)
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:
        remove_quietly(tmp)
        raise write_failed(path, exc) from exc
    except BaseException:
        remove_quietly(tmp)
        raise


def remove_quietly(tmp):
    """A temporary file, if there is one and it can go (not on a file system gone read-only)."""
    if tmp is not None:
        with contextlib.suppress(OSError):
            Path(tmp).unlink(missing_ok=True)


def write_png(path, array, compress_level=1):
    """``array`` (HxW or HxWx3 uint8) as a PNG, atomically; level 1 for the many pictures a test
    or prediction writes, a higher one for files kept as data (labels, masks)."""
    atomic_write(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG", compress_level=compress_level))


def atomic_write_csv(path, rows, fields):
    """rows (dicts) as a CSV with these columns, written atomically (``atomic_write``)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fields), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, lambda tmp: Path(tmp).write_text(escaped(buf.getvalue()), encoding="utf-8"))


def escaped(text: str) -> str:
    """``text`` as UTF-8 holds it: the bytes of a file name that are not UTF-8 (Latin-1 from a
    Windows zip, say; Python holds them as surrogates) as escapes, caf\\xe9.tif. ``unescaped``
    undoes it, so that a CSV read back names the file again."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate no file name holds
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def unescaped(text: str) -> str:
    """``escaped`` undone: caf\\xe9.tif back to the name the file system holds. (A name that
    holds a backslash and x and two hex digits itself is read as escaped; on Windows, whose
    names are always text and use backslashes, nothing is undone.)"""
    if os.name != "posix":
        return text
    return re.sub(r"\\x([89a-f][0-9a-f])", lambda m: chr(0xDC00 + int(m.group(1), 16)), text)


def files_in(paths, exts, what: str, skip=lambda f: False) -> list:
    """The files of ``paths``: a file as given, a folder's files with an extension of ``exts``
    (any case; hidden ones and those ``skip`` names left out), sorted; each file once, however
    often it is given. One ConfigError line for a path that is neither, or when none is found."""
    files = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.suffix.lower() in exts and not f.name.startswith(".")
                            and not skip(f))
        elif p.is_file():
            files.append(p)
        else:
            raise ConfigError(f"{p}: no such file or folder")
    files = list({f.resolve(): f for f in files}.values())  # a file given also through its folder: once
    if not files:
        raise ConfigError(f"no {what} ({' '.join(exts)}) in {', '.join(map(str, paths))}")
    return files


def check_targets(sources, targets, overwrite: bool, clash: str):
    """One ConfigError line, before anything is written, when two sources would be written to
    one target (``clash``, formatted with ``target``), a target is its own source, or a target
    exists and ``overwrite`` is not given."""
    twice = next((t for t in targets if targets.count(t) > 1), None)
    if twice is not None:
        raise ConfigError(clash.format(target=twice))
    for source, target in zip(sources, targets, strict=True):
        if target.exists() and target.resolve() == source.resolve():
            raise ConfigError(f"{target} would be written over its own source: choose another --out")
    taken = [t for t in targets if t.exists() and not overwrite]
    if taken:
        raise ConfigError(f"{taken[0]} exists{f' (and {len(taken) - 1} more)' if len(taken) > 1 else ''}: "
                          f"--overwrite replaces them")


LOCK_FILE = ".in_use"  # names the command writing into a folder (FolderLock)


class FolderLock:
    """Holds an output folder for one command while it writes there: a second command writing
    into the same folder at the same time would mix or drop the files of both, so it is refused in
    one line naming the first. An advisory lock (flock) on a file naming the command, ``lock_file``
    (default LOCK_FILE in the folder), which the system releases when the process ends, however
    it ends (a process killed outright leaves the file, but not the lock). The folder holding
    the lock file is created if need be, and removed again (with the parents this made) where
    nothing was written into it, also when the lock was refused. Where the system says it has no
    locks (Windows; an NFS mount whose lock service fails) a note says so and nothing is held;
    an NFS mount with ``nolock`` locks on each machine alone. A context manager."""

    def __init__(self, folder, option: str, lock_file=None):
        self.folder, self.option = Path(folder), option  # the option that names the folder, for the messages
        self.path = Path(lock_file) if lock_file else self.folder / LOCK_FILE
        self.made = []  # the folders this lock created, innermost first
        self.fd = self.inode = None

    def __enter__(self):
        where = self.path.parent
        self.made = [p for p in (where, *where.parents) if not p.exists()]
        try:
            make_folder(where, self.option)
            if fcntl is None:
                print(f"note: no file locks on this system: another command writing into {self.folder} at the same "
                      f"time would not be refused", file=sys.stderr)
            else:
                self._take()
        except BaseException:
            self._remove_made()
            raise
        return self

    def _take(self):
        for _ in range(10):  # a holder may remove the file (or the folder) between our open and lock
            fd, writable = self._open()
            if fd is None:
                continue
            inode = os.fstat(fd).st_ino
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = os.read(fd, 4096).decode("utf-8", "replace")
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise ConfigError(f"{self.option} {self.folder} is being written by another command "
                                      f"({describe_holder(holder)}): wait until it ends, or choose another "
                                      f"{self.option}") from None
                print(f"note: cannot lock {self.path} ({exc.strerror or exc}): another command writing into "
                      f"{self.folder} at the same time would not be refused", file=sys.stderr)
                if not holder and _inode(self.path) == inode:  # the empty file this made
                    with contextlib.suppress(OSError):
                        self.path.unlink()
                return
            if not writable:  # another user's, left by a command that has ended: replaced by one of ours
                try:
                    if _inode(self.path) == inode:
                        self.path.unlink()
                except OSError:  # a folder where only its owner may delete it (sticky, as /tmp): held as it is
                    self.fd, self.inode = fd, inode  # (a command refused meanwhile is told of its old holder)
                    return
                os.close(fd)
                continue
            if _inode(self.path) == inode:
                self.fd, self.inode = fd, inode
                holder = {"pid": os.getpid(), "host": socket.gethostname(),
                          "since": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv)[:300]}
                try:
                    os.ftruncate(fd, 0)
                    os.write(fd, json.dumps(holder).encode())  # (json escapes every name: ASCII)
                except OSError as exc:  # a full disk, a quota
                    raise ConfigError(f"{self.option} {self.folder}: cannot write its lock file {self.path} "
                                      f"({exc.strerror or exc})") from None
                return
            os.close(fd)  # locked a file its holder had just removed: take the new one
        raise ConfigError(f"{self.option} {self.folder}: could not take its lock {self.path} (other commands kept "
                          f"taking it)")

    def _open(self):
        """(fd, writable) of the lock file, created if need be; (None, _) when its folder has just
        gone (with its last holder's release). Never through a link: a link planted there would
        have its target written over."""
        flags = os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | flags, 0o666 & ~_UMASK), True
        except FileNotFoundError:
            make_folder(self.path.parent, self.option)
            return None, True
        except PermissionError as exc:
            if os.path.lexists(self.path):  # another user's file (a group's folder): it can still be locked
                try:
                    return os.open(self.path, os.O_RDONLY | flags), False
                except PermissionError:
                    raise ConfigError(self._not_ours("cannot be read here")) from None
                except OSError:
                    pass
            raise ConfigError(f"{self.option} {self.folder}: cannot write in this folder "
                              f"({exc.strerror or exc})") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise ConfigError(f"{self.option} {self.folder}: {self.path} is a link, not a lock file of this "
                                  f"project: delete it") from None
            raise ConfigError(f"{self.option} {self.folder}: cannot write in this folder "
                              f"({exc.strerror or exc})") from None

    def _not_ours(self, why: str) -> str:
        try:
            import pwd
            owner = pwd.getpwuid(os.stat(self.path).st_uid).pw_name
        except (ImportError, KeyError, OSError):
            owner = "another user"
        return (f"{self.option} {self.folder}: its lock file {self.path} is {owner}'s and {why}: if no command of "
                f"theirs writes there any more, they (or an administrator) delete it")

    def __exit__(self, *exc):
        if self.fd is not None:
            if _inode(self.path) == self.inode:  # still ours: gone before the lock is, so no one locks a removed file
                with contextlib.suppress(OSError):
                    self.path.unlink()
            os.close(self.fd)
            self.fd = None
        self._remove_made()
        return False

    def _remove_made(self):
        for folder in self.made:  # innermost first; a folder holding anything stays
            try:
                folder.rmdir()
            except FileNotFoundError:  # never made (a name too long, say): its parent may have been
                continue
            except OSError:
                break


def _inode(path):
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def describe_holder(text: str) -> str:
    """The words for a LOCK_FILE's holder: 'process 123 on host, since ..., python test.py ...'."""
    try:
        holder = json.loads(text)
        return (f"process {holder['pid']} on {holder['host']}, since {holder['since']}: "
                f"{holder['command']}")
    except (ValueError, KeyError, TypeError):
        return "a command starting just now"

"""Safe output: atomic file writes, output paths checked before work, one owned scratch folder.

- `atomic_path`: an interrupted run never leaves a half-written artifact; the file gets the
  mode any new file gets under the umask (0644 under umask 022), not mkstemp's 0600.
- `check_output_dir` / `check_output_file`: refuse a path that cannot be written (under a
  file, read-only, not permitted, names too long) before any work is done, so a long run
  never ends in an error about where to put its results.
- `scratch_dir`: the process's one temporary folder; removed at exit, and a folder left by
  a killed process (its pid gone) is removed by the next run.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import json
import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from mixdeploy.errors import MixdeployError

PART_SUFFIX = ".part"
SCRATCH_PREFIX = "mixdeploy-scratch-"


def _create_exclusive(path: Path) -> None:
    """A new empty file with mode 0666 & ~umask (O_EXCL: never someone else's file)."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))


def temp_name_beside(final: Path) -> Path:
    """`.NAME.XXXXXXXX.part` beside `final`: hidden, recognisably ours, unique."""
    return final.with_name(f".{final.name}.{secrets.token_hex(4)}{PART_SUFFIX}")


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `final`; rename it over `final` only on success.

    An OSError names `final` (a write that fails with ENOSPC on an open file names nothing).
    """
    final = Path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp_path = temp_name_beside(final)
        _create_exclusive(tmp_path)
    except OSError as err:
        raise _naming(err, final) from err
    try:
        yield tmp_path
        os.replace(tmp_path, final)
    except OSError as err:
        raise _naming(err, final) from err
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()


def _naming(err: OSError, path: Path) -> OSError:
    if err.filename is not None:
        return err
    return type(err)(err.errno, err.strerror, str(path))


def write_bytes_atomic(final: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)
    return Path(final)


def write_text_atomic(final: str | os.PathLike, text: str) -> Path:
    return write_bytes_atomic(final, text.encode())


def strict_json(obj) -> str:
    """JSON that strict parsers accept: a NaN or infinity is refused, naming where it is."""
    try:
        return json.dumps(obj, indent=2, sort_keys=False, default=str, allow_nan=False) + "\n"
    except ValueError:
        where = ", ".join(non_finite_fields(obj)[:5])
        raise MixdeployError(f"refusing to write JSON with non-finite numbers (NaN/inf at {where}); "
                             "the run produced invalid results: check the model and its inputs",
                             exit_code=1) from None


def non_finite_fields(obj, prefix: str = "") -> list[str]:
    """Dotted paths of the NaN / inf floats in a JSON-like object."""
    import math

    if isinstance(obj, float):
        return [] if math.isfinite(obj) else [prefix or "(top level)"]
    if isinstance(obj, dict):
        return [p for k, v in obj.items() for p in non_finite_fields(v, f"{prefix}.{k}" if prefix else str(k))]
    if isinstance(obj, (list, tuple)):
        return [p for i, v in enumerate(obj) for p in non_finite_fields(v, f"{prefix}[{i}]")]
    return []


def write_json_atomic(final: str | os.PathLike, obj) -> Path:
    return write_text_atomic(final, strict_json(obj))


# ---------------------------------------------------------------- output paths, checked at the door

def _name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def _path_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_PATH_MAX")
    except (OSError, ValueError):
        return 4096


def _exists(path: Path) -> bool:
    try:
        os.lstat(path)
        return True
    except OSError:   # ENOENT, ENOTDIR, ENAMETOOLONG...: not there as such
        return False


def _first_existing(path: Path) -> Path:
    parent = path
    while not _exists(parent) and parent.parent != parent:
        parent = parent.parent
    return parent


def _is_read_only_fs(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _check_writable_path(path: Path, what: str, *, want_dir: bool) -> None:
    absolute = Path(os.path.abspath(path))
    existing = _first_existing(absolute)
    too_long = [part for part in absolute.relative_to(existing).parts
                if len(os.fsencode(part)) > _name_max(existing if existing.is_dir() else existing.parent)]
    if too_long:
        raise MixdeployError(f"{what} {path}: the name {too_long[0][:40]}... is {len(os.fsencode(too_long[0]))} "
                             f"bytes, over the file system's limit of {_name_max(existing)}; choose a shorter name")
    if len(os.fsencode(str(absolute))) >= _path_max(existing if existing.is_dir() else existing.parent):
        raise MixdeployError(f"{what} {path}: the path is {len(os.fsencode(str(absolute)))} bytes long, over the "
                             "limit of this system; choose a shorter path")
    if existing == absolute:
        if want_dir and not existing.is_dir():
            raise MixdeployError(f"{what} {path} is a file, not a folder: give a folder (it is created if missing)")
        if not want_dir and existing.is_dir():
            raise MixdeployError(f"{what} {path} is a folder: give a file name, e.g. {path / 'out'}")
    elif not existing.is_dir():
        raise MixdeployError(f"{what} {path} cannot be written: {existing} is a file, not a folder")
    folder = existing if existing.is_dir() else existing.parent
    if _is_read_only_fs(folder):
        raise MixdeployError(f"{what} {path} cannot be written: {folder} is on a read-only file system; "
                             "choose a writable folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise MixdeployError(f"{what} {path} cannot be written: no permission to write in {folder}; choose "
                             "another folder or fix its permissions")
    if existing == absolute and not want_dir and not os.access(existing, os.W_OK):
        raise MixdeployError(f"{what} {path} cannot be overwritten: no permission; choose another file name")


def check_output_dir(path: str | os.PathLike, what: str) -> None:
    """Refuse an output folder that cannot be created or written, before any work is done."""
    _check_writable_path(Path(path), what, want_dir=True)


def check_output_file(path: str | os.PathLike, what: str) -> None:
    """Refuse an output file that cannot be written, before any work is done."""
    _check_writable_path(Path(path), what, want_dir=False)


def make_dirs(path: Path) -> list[Path]:
    """mkdir -p; returns the folders it created, outermost first (to remove them on failure)."""
    missing = []
    current = Path(path)
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for folder in reversed(missing):
        try:
            folder.mkdir()
        except FileExistsError:
            if not folder.is_dir():
                raise
    return list(reversed(missing))


def remove_empty_dirs(created: list[Path]) -> None:
    """Undo `make_dirs` for the folders that are still empty (innermost first)."""
    for folder in reversed(created):
        try:
            folder.rmdir()
        except OSError:
            return


# ---------------------------------------------------------------- the one scratch folder

_scratch: Path | None = None


def scratch_dir() -> Path:
    """This process's temporary folder (created on first use, removed at exit).

    Temporary files go in here and nowhere else, so one rmtree removes them all; a folder
    whose process was killed (kill -9, a crash) is removed by the next process that asks.
    """
    global _scratch
    if _scratch is None or not _scratch.is_dir():
        _remove_orphaned_scratch()
        _scratch = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-"))
        atexit.register(shutil.rmtree, _scratch, ignore_errors=True)
    return _scratch


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True       # someone else's live process
    return True


def _remove_orphaned_scratch() -> None:
    root = Path(tempfile.gettempdir())
    try:
        candidates = list(root.glob(f"{SCRATCH_PREFIX}*-*"))
    except OSError:
        return
    for folder in candidates:
        pid = folder.name[len(SCRATCH_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def is_disk_full(err: BaseException) -> bool:
    return isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT)

"""The one exception type for mistakes a user can fix.

The CLI prints these without a traceback and exits with `exit_code`
(2 for usage/input errors, 1 for a failed gate or device fault).
"""


class MixdeployError(Exception):
    """A user-fixable problem. The message must say what to do."""

    exit_code = 2

    def __init__(self, message: str, *, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class DeviceError(MixdeployError):
    """A phone/adb fault (no device, unauthorized, offline, dropped, timeout)."""

    exit_code = 1


class Interrupted(KeyboardInterrupt):
    """SIGTERM / SIGHUP turned into what Ctrl-C raises, so every `finally` and `with` cleans up.

    A KeyboardInterrupt (not an Exception): `except Exception` blocks must not swallow it.
    The CLI exits with 128 + signum, as a shell reports a process killed by that signal.
    """

    def __init__(self, signum: int):
        import signal

        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def os_error_message(err: OSError) -> str:
    """What a failed file operation means for the user, and what to do about it.

    The one place OS errors become messages (the CLI calls it for every command): the path,
    what went wrong in words, and the fix.
    """
    import errno

    path = err.filename if err.filename is not None else None
    where = f" {path}" if path is not None else ""
    hints = {
        errno.ENOSPC: f"no space left on the device while writing{where}: free some space, or write to "
                      "another disk (-o / --report / --plot)",
        errno.EDQUOT: f"disk quota exceeded while writing{where}: free some space or write elsewhere",
        errno.EROFS: f"{path or 'the path'} is on a read-only file system: choose a writable folder "
                     "(-o / --report / --plot)",
        errno.ENAMETOOLONG: f"the path{where} is too long (a name over 255 bytes, or a path over 4096): "
                            "choose a shorter name",
        errno.EACCES: f"permission denied:{where}: choose a path you may use, or fix its permissions",
        errno.EPERM: f"operation not permitted:{where}: choose a path you may use, or fix its permissions",
        errno.ENOTDIR: f"{path or 'the path'}: a part of this path is a file, not a folder; choose another path",
        errno.EISDIR: f"{path or 'the path'} is a folder where a file was expected; give a file name",
        errno.EEXIST: f"{path or 'the path'} already exists (a file where a folder was needed?); choose "
                      "another path or remove it",
        errno.ENOENT: f"no such file or folder:{where}; check the path",
        errno.ENOTEMPTY: f"{path or 'the folder'} is not empty; remove what is in it or choose another",
        errno.EMFILE: "too many open files: raise the limit (ulimit -n) or use fewer inputs at once",
        errno.ENFILE: "too many open files on this system: close other programs or raise the limit",
        errno.EIO: f"input/output error on{where or ' a file'}: the disk or network file system is failing; "
                   "check it (dmesg) or use another disk",
        errno.EXDEV: f"cannot move{where} across file systems; use one file system for the output",
        errno.ELOOP: f"too many symbolic links in{where}; check the path",
    }
    text = hints.get(err.errno)
    if text is None:
        reason = err.strerror or type(err).__name__
        text = f"{reason}:{where}" if where else reason
    if err.filename2 is not None and err.errno not in (errno.ENOSPC, errno.EDQUOT):
        text += f" (and {err.filename2})"
    return text

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

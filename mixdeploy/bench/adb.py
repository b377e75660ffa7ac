"""A thin wrapper over the real `adb` client (subprocess), with the faults turned into DeviceError.

Why the real client rather than a Python ADB implementation: it is what users have, it handles
USB, keys and server sharing, and it gives real exit codes with shell v2. Honoured environment:
ANDROID_SERIAL (default device), ANDROID_ADB_SERVER_PORT (read by adb itself), MIXDEPLOY_ADB
(another adb binary, e.g. the one bundled with adbutils or an SDK's platform-tools).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field

from mixdeploy.errors import DeviceError, MixdeployError

DEFAULT_TIMEOUT_S = 60.0

STATE_ADVICE = {
    "unauthorized": "unlock the phone and accept the 'Allow USB debugging?' dialog (tick 'Always "
                    "allow'); if no dialog shows, revoke USB debugging authorisations in Developer "
                    "options and re-plug",
    "offline": "the device is not answering adb: re-plug the cable (or `adb disconnect SERIAL` then "
               "`adb connect SERIAL` for network devices), or run `adb kill-server`",
    "no permissions": "the udev rules do not let this user open the USB device: install "
                      "android-sdk-platform-tools-common (Debian) or add a udev rule, then re-plug",
    "recovery": "the device is in recovery mode: reboot it into Android",
    "bootloader": "the device is in the bootloader: reboot it into Android",
}


@dataclass
class DeviceInfo:
    serial: str
    state: str                       # device, unauthorized, offline, ...
    model: str | None = None         # from `adb devices -l` (underscores for spaces)
    product: str | None = None
    device: str | None = None
    transport_id: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        model = f" model {self.model}" if self.model else ""
        return f"{self.serial} ({self.state}{model})"


@dataclass
class ShellResult:
    command: str
    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


class CommandTimeout(DeviceError):
    """A device command ran past its timeout (the local adb client was killed)."""


def find_adb() -> str:
    candidate = os.environ.get("MIXDEPLOY_ADB")
    if candidate:
        if not (os.path.isfile(candidate) and os.access(candidate, os.X_OK)):
            raise MixdeployError(f"MIXDEPLOY_ADB={candidate} is not an executable file: point it "
                                 f"at an adb binary or unset it to use the one on PATH")
        return candidate
    found = shutil.which("adb")
    if not found:
        raise MixdeployError("adb was not found on PATH: install it (`apt-get install -y adb` on "
                             "Debian/Ubuntu, or Android SDK platform-tools) or set MIXDEPLOY_ADB "
                             "to an adb binary")
    return found


def parse_devices_output(text: str) -> list[DeviceInfo]:
    """Parse `adb devices -l`: `SERIAL  STATE key:value ...` per line after the header."""
    devices = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("List of devices", "*", "adb server")):
            continue
        # The state can be two words ("no permissions (...)"): split on the key:value fields.
        serial, _, rest = line.replace("\t", " ").partition(" ")
        rest = rest.strip()
        fields = dict(re.findall(r"(\w+):(\S+)", rest))
        state = re.split(r"\s+\w+:", " " + rest, maxsplit=1)[0].strip() or "unknown"
        if state.startswith("no permissions"):
            state = "no permissions"
        devices.append(DeviceInfo(
            serial=serial, state=state, model=fields.pop("model", None),
            product=fields.pop("product", None), device=fields.pop("device", None),
            transport_id=fields.pop("transport_id", None), extra=fields))
    return devices


class Adb:
    """Runs the real adb client. Every call has a timeout; stdin is never forwarded."""

    def __init__(self, adb_path: str | None = None, env: dict[str, str] | None = None):
        self.adb_path = adb_path or find_adb()
        self.env = env  # None = inherit (ANDROID_ADB_SERVER_PORT etc. reach adb unchanged)

    # --- raw ---------------------------------------------------------------------------------
    def run(self, args: list[str], timeout: float = DEFAULT_TIMEOUT_S, serial: str | None = None,
            what: str | None = None) -> subprocess.CompletedProcess:
        cmd = [self.adb_path] + (["-s", serial] if serial else []) + list(args)
        try:
            return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, env=self.env,
                                  timeout=timeout)
        except subprocess.TimeoutExpired as err:
            # subprocess.run has killed the adb client; the caller decides on device cleanup.
            raise CommandTimeout(
                f"{what or 'adb ' + ' '.join(args)} did not finish within {timeout:g} s on "
                f"{serial or 'the adb server'}: it was stopped. Raise --timeout if the model is "
                f"just slow, or check the device (`adb devices -l`)") from err
        except FileNotFoundError as err:
            raise MixdeployError(f"could not run {self.adb_path}: install adb (`apt-get install -y "
                                 f"adb`) or set MIXDEPLOY_ADB") from err

    # --- devices -----------------------------------------------------------------------------
    def devices(self, timeout: float = 30.0) -> list[DeviceInfo]:
        proc = self.run(["devices", "-l"], timeout=timeout)
        if proc.returncode != 0:
            raise DeviceError(f"`adb devices` failed: {_tail(proc.stderr)}. Try `adb kill-server`.")
        return parse_devices_output(proc.stdout.decode(errors="replace"))

    def get_state(self, serial: str, timeout: float = 10.0) -> str | None:
        """The device's state as the server sees it now, or None when it is not attached."""
        try:
            for info in self.devices(timeout=timeout):
                if info.serial == serial:
                    return info.state
        except DeviceError:
            return None
        return None

    # --- per-device commands ---------------------------------------------------------------------
    def shell(self, serial: str, command: str, timeout: float = DEFAULT_TIMEOUT_S,
              check: bool = False) -> ShellResult:
        """Run `command` in the device shell; exit code and stderr are real (shell v2)."""
        proc = self.run(["shell", command], timeout=timeout, serial=serial,
                        what=f"`{_short(command)}`")
        result = ShellResult(command, proc.returncode, proc.stdout.decode(errors="replace"),
                             proc.stderr.decode(errors="replace"))
        if check and not result.ok:
            self.raise_if_gone(serial)
            raise DeviceError(f"`{_short(command)}` failed on {serial} with exit code "
                              f"{result.exit_code}: {_tail(result.stderr or result.stdout)}")
        return result

    def push(self, serial: str, local: str, remote: str, timeout: float = 300.0) -> None:
        proc = self.run(["push", str(local), remote], timeout=timeout, serial=serial,
                        what=f"push of {local}")
        if proc.returncode != 0:
            self.raise_if_gone(serial)
            raise DeviceError(f"adb push {local} -> {remote} failed on {serial}: "
                              f"{_tail(proc.stderr or proc.stdout)}")

    def pull(self, serial: str, remote: str, local: str, timeout: float = 300.0) -> None:
        proc = self.run(["pull", remote, str(local)], timeout=timeout, serial=serial,
                        what=f"pull of {remote}")
        if proc.returncode != 0:
            self.raise_if_gone(serial)
            raise DeviceError(f"adb pull {remote} failed on {serial}: {_tail(proc.stderr or proc.stdout)}")

    def getprop(self, serial: str, name: str, timeout: float = 15.0) -> str:
        return self.shell(serial, f"getprop {name}", timeout=timeout).stdout.strip()

    def raise_if_gone(self, serial: str) -> None:
        """After a failed command: was it the device that went away? Then say so."""
        state = self.get_state(serial)
        if state != "device":
            where = "is no longer attached" if state is None else f"is now {state}"
            raise DeviceError(f"device {serial} {where} (it went away during the run): check the "
                              f"cable/connection and that the phone did not reboot, then run again")

    # --- selection ---------------------------------------------------------------------------
    def select(self, selector: str | None) -> list[DeviceInfo]:
        """Devices for `--device`: a serial, a model substring (case-insensitive), or `all`.

        `android`/None means the one attached device, or ANDROID_SERIAL when set.
        """
        attached = self.devices()
        if selector in (None, "", "android", "phone"):
            selector = os.environ.get("ANDROID_SERIAL") or None
        if not attached:
            raise DeviceError("no Android device is attached: plug in a phone with USB debugging "
                              "enabled (Settings > Developer options), check `adb devices -l`")
        if selector == "all":
            chosen = attached
        elif selector is None:
            chosen = attached
            if len(chosen) > 1:
                raise DeviceError("several devices are attached; pick one with --device SERIAL, "
                                  "a model name, or `all`:\n" + _listing(attached))
        else:
            by_serial = [d for d in attached if d.serial == selector]
            chosen = by_serial or self._match_model(attached, selector)
            if not chosen:
                raise DeviceError(f"no attached device matches {selector!r} (serial or model "
                                  f"name); attached:\n" + _listing(attached))
            if len(chosen) > 1:
                raise DeviceError(f"{len(chosen)} attached devices match {selector!r}; use a "
                                  f"serial instead:\n" + _listing(chosen))
        unusable = [d for d in chosen if d.state != "device"]
        if unusable:
            raise DeviceError("\n".join(
                f"device {d.serial} is {d.state}: {STATE_ADVICE.get(d.state, 'check `adb devices -l`')}"
                for d in unusable))
        return chosen

    def _match_model(self, attached: list[DeviceInfo], selector: str) -> list[DeviceInfo]:
        """Case-insensitive substring of ro.product.model. The `devices -l` banner has it with
        underscores (and only for authorised devices), so ask usable devices for the real prop."""
        wanted = selector.lower().replace("_", " ")
        matches = []
        for info in attached:
            model = info.model.replace("_", " ") if info.model else None
            if info.state == "device":
                model = self.getprop(info.serial, "ro.product.model") or model
            if model and wanted in model.lower():
                matches.append(info)
        return matches


def _listing(devices: list[DeviceInfo]) -> str:
    return "\n".join(f"  {d.describe()}" for d in devices) or "  (none)"


def _short(command: str, limit: int = 120) -> str:
    return command if len(command) <= limit else command[: limit - 3] + "..."


def _tail(text: bytes | str, lines: int = 15) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    kept = text.strip().splitlines()[-lines:]
    return "\n".join(kept) if kept else "(no output)"

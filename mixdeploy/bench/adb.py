"""A thin wrapper over the real `adb` client (subprocess), with the faults turned into DeviceError.

Why the real client rather than a Python ADB implementation: it is what users have, it handles
USB, keys and server sharing, and it gives real exit codes with shell v2. Honoured environment:
ANDROID_SERIAL (default device), ANDROID_ADB_SERVER_PORT (read by adb itself), MIXDEPLOY_ADB
(another adb binary, e.g. the one bundled with adbutils or an SDK's platform-tools).

One `Adb` talks to one adb server: the local one, or `Adb(server="HOST:PORT")` for phones
attached to another machine (adb's own `-H HOST -P PORT`; that server must listen on the
network, e.g. `adb -a nodaemon server start` on the lab host).
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


def parse_server(value: str) -> tuple[str, int]:
    """`HOST:PORT` of an adb server (`[::1]:5037` for IPv6) -> (host, port)."""
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise MixdeployError(f"--adb-server {value!r}: give HOST:PORT of an adb server, e.g. lab-host:5037 "
                             f"(on that host: `adb -a nodaemon server start`)")
    return host, int(port)


class Adb:
    """Runs the real adb client against one server. Every call has a timeout; stdin is never forwarded."""

    def __init__(self, adb_path: str | None = None, env: dict[str, str] | None = None,
                 server: str | None = None):
        self.adb_path = adb_path or find_adb()
        self.env = env  # None = inherit (ANDROID_ADB_SERVER_PORT etc. reach adb unchanged)
        self.server = parse_server(server) if server else None

    @property
    def server_label(self) -> str:
        """HOST:PORT of the server this client talks to (results name it with the serial)."""
        if self.server:
            return f"{self.server[0]}:{self.server[1]}"
        env = self.env if self.env is not None else os.environ
        return f"localhost:{env.get('ANDROID_ADB_SERVER_PORT') or 5037}"

    # --- raw ---------------------------------------------------------------------------------
    def run(self, args: list[str], timeout: float = DEFAULT_TIMEOUT_S, serial: str | None = None,
            what: str | None = None) -> subprocess.CompletedProcess:
        where = ["-H", self.server[0], "-P", str(self.server[1])] if self.server else []
        cmd = [self.adb_path, *where] + (["-s", serial] if serial else []) + list(args)
        try:
            return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, env=self.env,
                                  timeout=timeout)
        except subprocess.TimeoutExpired as err:
            # subprocess.run has killed the adb client; the caller decides on device cleanup.
            raise CommandTimeout(
                f"{what or 'adb ' + ' '.join(args)} did not finish within {timeout:g} s on "
                f"{serial or 'the adb server ' + self.server_label}: it was stopped. Raise --timeout if the model is "
                f"just slow, or check the device (`adb devices -l`)") from err
        except FileNotFoundError as err:
            raise MixdeployError(f"could not run {self.adb_path}: install adb (`apt-get install -y "
                                 f"adb`) or set MIXDEPLOY_ADB") from err

    # --- devices -----------------------------------------------------------------------------
    def devices(self, timeout: float = 30.0) -> list[DeviceInfo]:
        proc = self.run(["devices", "-l"], timeout=timeout)
        if proc.returncode != 0:
            advice = ("check that it runs and listens on the network (`adb -a nodaemon server start` there)"
                      if self.server else "try `adb kill-server`")
            raise DeviceError(f"`adb devices` on server {self.server_label} failed: {_tail(proc.stderr)}. "
                              f"{advice[0].upper() + advice[1:]}.")
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
        return [info for _, info in select_devices([self], selector)]

    def model_of(self, info: DeviceInfo) -> str | None:
        """ro.product.model of a usable device (the `devices -l` banner has underscores for spaces)."""
        model = info.model.replace("_", " ") if info.model else None
        if info.state == "device":
            model = self.getprop(info.serial, "ro.product.model") or model
        return model


def select_devices(clients: list[Adb], selector: str | None, keep_unusable: bool = False,
                   unreachable: list[tuple[Adb, str]] | None = None) -> list[tuple[Adb, DeviceInfo]]:
    """Devices for `--device` over one or more adb servers, as (client, device) pairs.

    keep_unusable: a fleet run (`all`) keeps unauthorized/offline devices (each becomes a failed
    row) instead of stopping at them; otherwise they stop the run with what to do.
    unreachable: when given, a server that does not answer is appended there (client, why)
    instead of stopping the run.
    """
    attached = []
    for client in clients:
        try:
            attached += [(client, info) for info in client.devices()]
        except DeviceError as err:
            if unreachable is None:
                raise
            unreachable.append((client, str(err)))
    if not attached and unreachable:
        return []
    chosen = _select(attached, selector)
    unusable = [info for _, info in chosen if info.state != "device"]
    if unusable and not keep_unusable:
        raise DeviceError("\n".join(unusable_reason(info) for info in unusable))
    return chosen


def unusable_reason(info: DeviceInfo) -> str:
    return f"device {info.serial} is {info.state}: {STATE_ADVICE.get(info.state, 'check `adb devices -l`')}"


def _select(attached: list[tuple[Adb, DeviceInfo]], selector: str | None) -> list[tuple[Adb, DeviceInfo]]:
    if selector in (None, "", "android", "phone"):
        selector = os.environ.get("ANDROID_SERIAL") or None
    if not attached:
        raise DeviceError("no Android device is attached: plug in a phone with USB debugging "
                          "enabled (Settings > Developer options), check `adb devices -l`")
    if selector == "all":
        return attached
    if selector is None:
        if len(attached) > 1:
            raise DeviceError("several devices are attached; pick one with --device SERIAL, "
                              "a model name, or `all`:\n" + _listing(attached))
        return attached
    chosen = [pair for pair in attached if pair[1].serial == selector] or _match_model(attached, selector)
    if not chosen:
        raise DeviceError(f"no attached device matches {selector!r} (serial or model "
                          f"name); attached:\n" + _listing(attached))
    if len(chosen) > 1:
        raise DeviceError(f"{len(chosen)} attached devices match {selector!r}; use a "
                          f"serial instead:\n" + _listing(chosen))
    return chosen


def _match_model(attached: list[tuple[Adb, DeviceInfo]], selector: str) -> list[tuple[Adb, DeviceInfo]]:
    """Case-insensitive substring of ro.product.model. The `devices -l` banner has it with
    underscores (and only for authorised devices), so ask usable devices for the real prop."""
    wanted = selector.lower().replace("_", " ")
    return [(client, info) for client, info in attached
            if wanted in (client.model_of(info) or "").lower()]


def _listing(attached: list[tuple[Adb, DeviceInfo]]) -> str:
    several = len({client.server_label for client, _ in attached}) > 1
    return "\n".join(f"  {info.describe()}" + (f" on {client.server_label}" if several else "")
                     for client, info in attached) or "  (none)"


def _short(command: str, limit: int = 120) -> str:
    return command if len(command) <= limit else command[: limit - 3] + "..."


def _tail(text: bytes | str, lines: int = 15) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    kept = text.strip().splitlines()[-lines:]
    return "\n".join(kept) if kept else "(no output)"

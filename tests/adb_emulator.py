"""An emulated Android device that the REAL adb client/server talks to over loopback.

Standard library only (but AdbLab at the end, a private adb server for the tests, whose client
is mixdeploy's Adb). It speaks the adb transport protocol (CNXN/AUTH/OPEN/OKAY/WRTE/CLSE, AOSP
packages/modules/adb protocol.txt) and implements the services the benchmark path uses: `shell,v2`
(real exit codes, separate stderr) and `sync:` (STAT, LIST, SEND, RECV, QUIT).

The device's file system is a sandbox folder: /data, /sdcard, /system and /sys map to
<sandbox>/data etc. Shell commands are run by /bin/sh on the host after their /data... paths
are rewritten into the sandbox (path mapping, no bubblewrap), and output paths are mapped back.
<sandbox>/system/bin comes first on PATH and holds stand-ins for Android's getprop, dumpsys and
taskset (the host's taskset would refuse a phone's big-core mask). The CPUs are `cpus`: each
core's cpuinfo_max_freq under /sys/devices/system/cpu/cpuN/cpufreq/ (absent for offline cores)
and /sys/devices/system/cpu/online (`online`); the taskset stand-in fails as the kernel does
("failed to set pid's affinity: Invalid argument") when no core of its mask is online. The
device's CPU kernels are the ARM64 twin's when it is set up: commands see EMULATED_DEVICE_CPU
(`arm64_cpu`, a qemu CPU model), which the benchmark_model stand-in
(tests/data/fake_benchmark_model.py) runs the model on.

Behaviours for fault tests: `auth="reject"` (shows as `unauthorized`), `handshake=False`
(shows as `offline`), `drop()` (device gone: every connection closed, listener stopped) and
`drop_on="text"` (drop 0.5 s after a shell command containing the text starts: gone mid-run).
A drop kills the commands running at that moment (their process groups); processes the phone
had detached before (`setsid`, like mixdeploy's run-folder reaper) keep running, as on a phone.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

A_CNXN, A_AUTH, A_OPEN, A_OKAY, A_CLSE, A_WRTE = (
    struct.unpack("<I", name)[0] for name in (b"CNXN", b"AUTH", b"OPEN", b"OKAY", b"CLSE", b"WRTE"))
A_VERSION = 0x01000001
MAX_PAYLOAD = 256 * 1024
AUTH_TOKEN = 1
DEVICE_ROOTS = ("data", "sdcard", "system", "sys")
# Google Tensor G2 (Pixel 7): cores 0-3 Cortex-A55 at 1.80 GHz, 4-5 A78 at 2.35 GHz, 6-7 X1 at 2.85 GHz.
PIXEL_7_MAX_FREQ_KHZ = (1803000,) * 4 + (2348000,) * 2 + (2850000,) * 2


def _cpu_list(text: str) -> list[int]:
    cpus = []
    for part in text.split(","):
        first, _, last = part.strip().partition("-")
        cpus += range(int(first), int(last or first) + 1)
    return cpus


def _message(command: int, arg0: int, arg1: int, data: bytes = b"") -> bytes:
    return struct.pack("<6I", command, arg0, arg1, len(data), sum(data) & 0xFFFFFFFF,
                       command ^ 0xFFFFFFFF) + data


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("peer closed")
        buf += chunk
    return bytes(buf)


class EmulatedDevice:
    def __init__(self, sandbox: Path, *, model: str = "Pixel 7", product: str = "panther",
                 device: str = "panther", props: dict[str, str] | None = None,
                 auth: str = "none", handshake: bool = True, drop_on: str | None = None,
                 arm64_cpu: str = "cortex-a76", cpus: tuple[int, ...] = PIXEL_7_MAX_FREQ_KHZ,
                 online: str | None = None, drop_after_s: float = 0.5):
        self.sandbox = Path(sandbox)
        self.model, self.product, self.device = model, product, device
        self.props = {"ro.product.model": model, "ro.product.name": product,
                      "ro.product.device": device, "ro.build.version.release": "14",
                      "ro.build.version.sdk": "34", "ro.board.platform": "gs201",
                      "ro.soc.model": "GS201", "ro.product.cpu.abi": "arm64-v8a", **(props or {})}
        self.auth, self.handshake = auth, handshake
        self.arm64_cpu = arm64_cpu             # the qemu CPU model of the twin that computes outputs
        self.cpus = tuple(cpus)                # max frequency (kHz) per core
        self.online = online or f"0-{len(self.cpus) - 1}"
        self.drop_on = drop_on                 # drop() drop_after_s after a command containing this
        self.drop_after_s = drop_after_s
        self.commands: list[str] = []          # every shell command, as the host sent it
        self.started: list[tuple[float, str]] = []   # (time.monotonic(), command) as each began
        self.dropped_at: float | None = None
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(8)
        self.port = self._listener.getsockname()[1]
        self._conns: list[socket.socket] = []
        self._procs: set[subprocess.Popen] = set()
        self._lock = threading.Lock()
        self._closed = False
        self._install_system()
        threading.Thread(target=self._accept_loop, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    # --- file system ------------------------------------------------------------------------
    def host_path(self, device_path: str) -> Path:
        return self.sandbox / device_path.lstrip("/")

    def map_command(self, command: str) -> str:
        root = str(self.sandbox)
        return re.sub(r"(?<![\w./-])/(%s)(?=/|\s|$|['\";])" % "|".join(DEVICE_ROOTS),
                      lambda m: root + m.group(0), command)

    def _install_system(self) -> None:
        for d in ("data/local/tmp", "sdcard", "system/bin"):
            self.host_path(d).mkdir(parents=True, exist_ok=True)
        self._install_cpus()
        (self.sandbox / "props.txt").write_text("".join(f"{k}={v}\n" for k, v in self.props.items()))
        bin_dir = self.host_path("system/bin")
        scripts = {
            "getprop": f'#!/bin/sh\nif [ -z "$1" ]; then sed "s/^\\(.*\\)=\\(.*\\)$/[\\1]: [\\2]/" '
                       f'"{self.sandbox}/props.txt"; exit 0; fi\n'
                       f'grep "^$1=" "{self.sandbox}/props.txt" | head -n1 | cut -d= -f2-\n',
            # Android's taskset takes a hex mask; record it, refuse a mask without an online core
            # (sched_setaffinity's EINVAL), then run the command unpinned.
            "taskset": f'#!/bin/sh\necho "$1" >> "{self.sandbox}/taskset.log"\n'
                       f'if [ $(( 0x$1 & $(cat "{self.sandbox}/online_mask") )) -eq 0 ]; then\n'
                       f'  echo "taskset: failed to set pid\'s affinity: Invalid argument" >&2; exit 1; fi\n'
                       f'shift\nexec "$@"\n',
            "dumpsys": '#!/bin/sh\ncase "$1" in\n'
                       '  battery) printf "Current Battery Service state:\\n  AC powered: false\\n'
                       '  USB powered: true\\n  status: 2\\n  level: 87\\n  scale: 100\\n'
                       '  temperature: 312\\n";;\n'
                       '  thermalservice) printf "IsStatusOverride: false\\nThermal Status: 0\\n";;\n'
                       '  *) echo "Can\'t find service: $1" >&2; exit 1;;\nesac\n',
        }
        for name, text in scripts.items():
            path = bin_dir / name
            path.write_text(text)
            path.chmod(0o755)

    def _install_cpus(self) -> None:
        root = self.host_path("sys/devices/system/cpu")
        online = set(_cpu_list(self.online))
        for cpu, khz in enumerate(self.cpus):
            freq = root / f"cpu{cpu}" / "cpufreq"
            freq.mkdir(parents=True, exist_ok=True)
            target = freq / "cpuinfo_max_freq"
            if cpu in online:
                target.write_text(f"{khz}\n")
            elif target.exists():
                target.unlink()           # an offline core's cpufreq policy is gone
        (root / "online").write_text(self.online + "\n")
        (self.sandbox / "online_mask").write_text(hex(sum(1 << c for c in online)) + "\n")

    def set_online(self, online: str) -> None:
        """Cores go offline / come back (thermal or power management)."""
        self.online = online
        self._install_cpus()

    # --- lifecycle ----------------------------------------------------------------------------
    def drop(self) -> None:
        """The device disappears: cable pulled. Closes every connection and the listener, and
        the commands running now die with their process groups."""
        self.dropped_at = self.dropped_at or time.monotonic()
        self._closed = True
        for s in [self._listener, *self._conns]:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        for proc in list(self._procs):
            try:
                os.killpg(proc.pid, signal.SIGKILL)     # start_new_session: the group is the command
            except OSError:
                pass

    close = drop

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    # --- transport ------------------------------------------------------------------------------
    def _serve(self, conn: socket.socket) -> None:
        streams: dict[int, _Stream] = {}
        state = {"next_id": 1, "max_payload": MAX_PAYLOAD}
        send_lock = threading.Lock()

        def send(command, arg0, arg1, data=b""):
            with send_lock:
                conn.sendall(_message(command, arg0, arg1, data))

        try:
            while True:
                header = _recv_exact(conn, 24)
                command, arg0, arg1, length, _check, _magic = struct.unpack("<6I", header)
                data = _recv_exact(conn, length) if length else b""
                if command == A_CNXN:
                    state["max_payload"] = min(arg1, MAX_PAYLOAD)
                    if not self.handshake:
                        continue                      # stays "offline" on the host
                    if self.auth == "reject":
                        send(A_AUTH, AUTH_TOKEN, 0, os.urandom(20))
                        continue
                    send(A_CNXN, A_VERSION, MAX_PAYLOAD, self._banner())
                elif command == A_AUTH:
                    # Reject every signature; after the public key the host waits for the
                    # user to tap "allow" on the phone, which never happens: `unauthorized`.
                    if arg0 == 2:  # SIGNATURE
                        send(A_AUTH, AUTH_TOKEN, 0, os.urandom(20))
                elif command == A_OPEN:
                    local_id = state["next_id"]
                    state["next_id"] += 1
                    service = data.rstrip(b"\0").decode()
                    stream = _Stream(self, local_id, arg0, service, send, state["max_payload"])
                    if not stream.start():
                        send(A_CLSE, 0, arg0)
                        continue
                    streams[local_id] = stream
                    send(A_OKAY, local_id, arg0)
                    stream.begin()
                elif command == A_WRTE:
                    stream = streams.get(arg1)
                    send(A_OKAY, arg1, arg0)
                    if stream:
                        stream.feed(data)
                elif command == A_OKAY:
                    stream = streams.get(arg1)
                    if stream:
                        stream.acked()
                elif command == A_CLSE:
                    stream = streams.pop(arg1, None)
                    if stream:
                        stream.closed_by_host()
        except (ConnectionError, OSError):
            pass
        finally:
            for stream in streams.values():
                stream.closed_by_host()
            conn.close()

    def _banner(self) -> bytes:
        return (f"device::ro.product.name={self.product};ro.product.model={self.model};"
                f"ro.product.device={self.device};features=shell_v2,cmd").encode()


class _Stream:
    """One OPENed service. Writes to the host are flow-controlled: one WRTE in flight."""

    def __init__(self, device: EmulatedDevice, local_id: int, remote_id: int, service: str,
                 send, max_payload: int):
        self.device, self.local_id, self.remote_id = device, local_id, remote_id
        self.service, self.send, self.max_payload = service, send, max_payload
        self.inbox = bytearray()
        self.inbox_ready = threading.Condition()
        self.ack = threading.Semaphore(0)
        self.open = True
        self.proc: subprocess.Popen | None = None
        self.write_lock = threading.Lock()     # stdout and stderr pumps share the stream

    def start(self) -> bool:
        return self.service.startswith(("shell", "sync:"))

    def begin(self) -> None:
        target = self._run_shell if self.service.startswith("shell") else self._run_sync
        threading.Thread(target=target, daemon=True).start()

    # host -> device
    def feed(self, data: bytes) -> None:
        with self.inbox_ready:
            self.inbox += data
            self.inbox_ready.notify_all()

    def acked(self) -> None:
        self.ack.release()

    def closed_by_host(self) -> None:
        self.open = False
        self.ack.release()
        with self.inbox_ready:
            self.inbox_ready.notify_all()
        if self.proc and self.proc.poll() is None:
            self.proc.kill()          # `adb shell` killed on the host: the command dies too

    def read(self, n: int) -> bytes:
        with self.inbox_ready:
            while len(self.inbox) < n:
                if not self.open:
                    raise ConnectionError("stream closed")
                self.inbox_ready.wait(timeout=1)
            data = bytes(self.inbox[:n])
            del self.inbox[:n]
            return data

    # device -> host
    def write(self, data: bytes) -> None:
        for i in range(0, len(data), self.max_payload):
            if not self.open:
                raise ConnectionError("stream closed")
            self.send(A_WRTE, self.local_id, self.remote_id, data[i:i + self.max_payload])
            self.ack.acquire(timeout=30)

    def close(self) -> None:
        if self.open:
            self.open = False
            try:
                self.send(A_CLSE, self.local_id, self.remote_id)
            except OSError:
                pass

    # --- shell,v2 ------------------------------------------------------------------------------
    def _run_shell(self) -> None:
        head, _, command = self.service.partition(":")
        v2 = "v2" in head.split(",")
        self.device.commands.append(command)
        self.device.started.append((time.monotonic(), command))
        if self.device.drop_on and self.device.drop_on in command:
            threading.Timer(self.device.drop_after_s, self.device.drop).start()
        env = dict(os.environ, PATH=f"{self.device.host_path('system/bin')}:{os.environ['PATH']}",
                   EMULATED_DEVICE_SANDBOX=str(self.device.sandbox), EMULATED_DEVICE_CPU=self.device.arm64_cpu)
        try:
            self.proc = subprocess.Popen(["/bin/sh", "-c", self.device.map_command(command)],
                                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, cwd=self.device.sandbox, env=env,
                                         start_new_session=True)
            self.device._procs.add(self.proc)
            threading.Thread(target=self._drain_stdin, daemon=True).start()
            err_thread = threading.Thread(target=self._pump, args=(self.proc.stderr, 2, v2), daemon=True)
            err_thread.start()
            self._pump(self.proc.stdout, 1, v2)
            err_thread.join(timeout=30)
            code = self.proc.wait()
            if v2:
                self.write(struct.pack("<BI", 3, 1) + bytes([code & 0xFF]))
        except (ConnectionError, OSError):
            pass
        finally:
            if self.proc:
                self.device._procs.discard(self.proc)
            self.close()

    def _pump(self, pipe, packet_id: int, v2: bool) -> None:
        root = str(self.device.sandbox).encode()
        try:
            for chunk in iter(lambda: pipe.read1(65536), b""):
                chunk = chunk.replace(root, b"")          # show device paths, not sandbox paths
                with self.write_lock:
                    self.write(struct.pack("<BI", packet_id, len(chunk)) + chunk if v2 else chunk)
        except (ConnectionError, OSError, ValueError):
            pass                                          # host closed the stream / device dropped

    def _drain_stdin(self) -> None:
        try:
            while self.open:
                self.read(1)
        except ConnectionError:
            pass

    # --- sync ------------------------------------------------------------------------------------
    def _run_sync(self) -> None:
        try:
            while True:
                request, length = struct.unpack("<4sI", self.read(8))
                if request == b"QUIT":
                    break
                payload = self.read(length).decode()
                handler = {b"STAT": self._stat, b"LIST": self._list, b"SEND": self._send,
                           b"RECV": self._recv}.get(request)
                if handler is None:
                    self._fail(f"unsupported sync request {request!r}")
                    break
                handler(payload)
        except ConnectionError:
            pass
        finally:
            self.close()

    def _fail(self, message: str) -> None:
        data = message.encode()
        self.write(b"FAIL" + struct.pack("<I", len(data)) + data)

    def _stat(self, path: str) -> None:
        try:
            st = self.device.host_path(path).stat()
            self.write(b"STAT" + struct.pack("<III", st.st_mode, st.st_size & 0xFFFFFFFF, int(st.st_mtime)))
        except OSError:
            self.write(b"STAT" + struct.pack("<III", 0, 0, 0))

    def _list(self, path: str) -> None:
        folder = self.device.host_path(path)
        for entry in sorted(folder.iterdir()) if folder.is_dir() else []:
            st = entry.stat()
            name = entry.name.encode()
            self.write(b"DENT" + struct.pack("<IIII", st.st_mode, st.st_size & 0xFFFFFFFF,
                                              int(st.st_mtime), len(name)) + name)
        self.write(b"DONE" + struct.pack("<IIII", 0, 0, 0, 0))

    def _send(self, spec: str) -> None:
        path, _, mode = spec.rpartition(",")
        target = self.device.host_path(path)
        data = bytearray()
        while True:
            kind, length = struct.unpack("<4sI", self.read(8))
            if kind == b"DATA":
                data += self.read(length)
            elif kind == b"DONE":
                break
            else:
                self._fail(f"unexpected {kind!r}")
                return
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(bytes(data))
            target.chmod(stat.S_IMODE(int(mode)) or 0o644)
        except OSError as err:
            self._fail(f"couldn't create file: {err.strerror}")
            return
        self.write(b"OKAY" + struct.pack("<I", 0))

    def _recv(self, path: str) -> None:
        source = self.device.host_path(path)
        try:
            data = source.read_bytes()
        except OSError as err:
            self._fail(f"{path}: {err.strerror}")
            return
        for i in range(0, len(data), 64 * 1024):
            chunk = data[i:i + 64 * 1024]
            self.write(b"DATA" + struct.pack("<I", len(chunk)) + chunk)
        self.write(b"DONE" + struct.pack("<I", 0))


# --- a private adb server with emulated devices, for tests ----------------------------------------

ADB_CANDIDATES = ["/usr/bin/adb"]
# The device's stand-in benchmark_model: runs the pushed model with host LiteRT (see its docstring).
FAKE_TOOL = Path(__file__).parent / "data" / "fake_benchmark_model.py"


def _adb_client(adb_path: str, env: dict):
    from mixdeploy.bench.adb import Adb

    return Adb(adb_path, env=env)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AdbLab:
    """A private adb server plus emulated devices connected to it."""

    def __init__(self, root: Path, adb_path: str):
        self.root = root
        home = root / "home"
        home.mkdir()
        self.env = dict(os.environ, ANDROID_ADB_SERVER_PORT=str(_free_port()), HOME=str(home))
        self.env.pop("ANDROID_SERIAL", None)
        self.adb_path = adb_path
        self.adb = _adb_client(adb_path, self.env)
        self.devices: list[EmulatedDevice] = []
        self._pending: list[subprocess.Popen] = []
        self.cmd("start-server", timeout=20)

    def cmd(self, *args, timeout=20) -> subprocess.CompletedProcess:
        return subprocess.run([self.adb_path, *args], env=self.env, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout)

    def add(self, name: str = "pixel", wait_state: str = "device", **kw) -> EmulatedDevice:
        dev = EmulatedDevice(self.root / name, **kw)
        self.devices.append(dev)
        if kw.get("handshake", True):
            self.cmd("connect", dev.address)
        else:
            # `adb connect` waits 10 s for a handshake that never comes; the server lists the
            # device as offline meanwhile, which is all the test needs.
            self._pending.append(subprocess.Popen([self.adb_path, "connect", dev.address], env=self.env,
                                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                                  stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if any(d.serial == dev.address and d.state == wait_state for d in self.adb.devices()):
                return dev
            time.sleep(0.05)
        raise AssertionError(f"{dev.address} never showed as {wait_state}: {self.cmd('devices').stdout}")

    def close(self):
        for proc in self._pending:
            proc.kill()
            proc.wait(timeout=10)
        self.cmd("kill-server", timeout=20)
        for dev in self.devices:
            dev.close()


if __name__ == "__main__":  # manual use: python tests/adb_emulator.py SANDBOX
    dev = EmulatedDevice(Path(sys.argv[1]))
    print(f"adb connect {dev.address}", flush=True)
    threading.Event().wait()

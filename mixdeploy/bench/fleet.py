"""A fleet of phones in one run: every selected phone on every adb server, failures as rows.

One adb client per server (the local one, or `--adb-server HOST:PORT` for phones attached to
other machines). Servers run in parallel, one thread each; on a server, its phones run one after
the other, and each phone runs one model at a time, so no two benchmarks share a phone. A phone
that fails (went away, unauthorized, tool error, timeout) becomes a `PhoneFailure` row and the
others carry on; an unreachable server is a failed row too.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from mixdeploy.bench.adb import Adb, DeviceInfo, select_devices, unusable_reason
from mixdeploy.bench.phone import (PhoneBenchResult, PhoneFailure, RunOptions, bench_on_device, check_model_file,
                                   check_options, resolve_benchmark_binary)
from mixdeploy.errors import DeviceError

Outcome = PhoneBenchResult | PhoneFailure


def bench_fleet(tflite_paths: list[str | os.PathLike], device: str | None, servers: list[str] | None = None,
                benchmark_binary: str | os.PathLike | None = None, options: RunOptions | None = None,
                adb_path: str | None = None,
                on_done: Callable[[Outcome], None] | None = None) -> list[Outcome]:
    """Every model on every phone `device` selects over `servers` (default: the local adb server).

    Results come back in a stable order (server, phone, model), whatever finished first.
    """
    paths = [check_model_file(p) for p in tflite_paths]
    options = options or RunOptions()
    check_options(options)
    binary = resolve_benchmark_binary(str(benchmark_binary) if benchmark_binary else None)
    clients = [Adb(adb_path, server=s) for s in dict.fromkeys(servers)] if servers else [Adb(adb_path)]
    unreachable: list[tuple[Adb, str]] = []
    chosen = select_devices(clients, device, keep_unusable=True, unreachable=unreachable)
    outcomes: list[Outcome] = [PhoneFailure(str(p), client.server_label, "-", None, why)
                               for client, why in unreachable for p in paths]
    per_server = {client.server_label: [info for c, info in chosen if c is client] for client in clients}

    def run_server(client: Adb) -> list[Outcome]:
        done = []
        for info in per_server[client.server_label]:
            for path in paths:
                done.append(_run_one(client, info, path, binary, options))
                if on_done:
                    on_done(done[-1])
        return done

    with ThreadPoolExecutor(max_workers=len(clients), thread_name_prefix="adb-server") as pool:
        for result in pool.map(run_server, clients):
            outcomes += result
    return outcomes


def _run_one(client: Adb, info: DeviceInfo, path: Path, binary: Path, options: RunOptions) -> Outcome:
    model = info.model.replace("_", " ") if info.model else None
    if info.state != "device":
        return PhoneFailure(str(path), client.server_label, info.serial, model, unusable_reason(info))
    try:
        return bench_on_device(client, info, path, binary, options)
    except DeviceError as err:
        return PhoneFailure(str(path), client.server_label, info.serial, model, str(err))


def failed(outcomes: list[Outcome]) -> list[PhoneFailure]:
    return [o for o in outcomes if isinstance(o, PhoneFailure)]

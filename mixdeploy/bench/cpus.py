"""Which cores a phone run is pinned to, from what the phone says at run time.

Phones take cores offline under thermal and power management (the big ones first), and
`taskset MASK` fails outright ("failed to set pid's affinity: Invalid argument") when no core of
the mask is online. So the mask is decided per run: the profile's big cores
(mixdeploy/bench/device_profiles.json) intersected with /sys/devices/system/cpu/online; when none
of them is online, or the phone has no profile, the fastest online cores by
cpufreq/cpuinfo_max_freq (the top cluster). Every departure from the profile is a note in the result.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from mixdeploy.bench.adb import Adb

CPU_ROOT = "/sys/devices/system/cpu"


@dataclass
class CpuFacts:
    online: list[int]                                           # /sys/devices/system/cpu/online
    max_freq_khz: dict[int, int] = field(default_factory=dict)  # cpuN -> cpuinfo_max_freq (readable ones)


@dataclass
class Pinning:
    cpus: list[int] | None         # None: unpinned
    online: list[int] | None       # what the phone said was online (None: could not read it)
    note: str | None = None        # why this differs from the profile, if it does

    @property
    def mask(self) -> str | None:
        return cpu_mask(self.cpus) if self.cpus else None


def parse_cpu_list(text: str) -> list[int]:
    """The kernel's CPU list format: `0-3,6` -> [0, 1, 2, 3, 6]."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        if not part.strip():
            continue
        first, _, last = part.strip().partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return sorted(cpus)


def format_cpus(cpus) -> str:
    """[0, 1, 2, 3, 6] -> `0-3,6` (the kernel's own list format)."""
    cpus, runs = sorted(cpus), []
    for cpu in cpus:
        if runs and cpu == runs[-1][1] + 1:
            runs[-1][1] = cpu
        else:
            runs.append([cpu, cpu])
    return ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs) or "none"


def cpu_mask(cpus) -> str:
    """taskset's hex mask, without 0x: bit N = cpuN ([6, 7] -> `c0`)."""
    return format(sum(1 << c for c in cpus), "x")


def mask_cpus(mask: str) -> list[int]:
    value = int(mask, 16)
    return [bit for bit in range(value.bit_length()) if value >> bit & 1]


def read_cpu_facts(adb: Adb, serial: str) -> CpuFacts | None:
    """Online cores and each readable core's max frequency, in one shell call (None if unreadable)."""
    script = (f"cat {CPU_ROOT}/online; for f in {CPU_ROOT}/cpu[0-9]*/cpufreq/cpuinfo_max_freq; "
              f"do echo \"$f $(cat $f 2>/dev/null)\"; done")
    out = adb.shell(serial, script, timeout=20)
    lines = out.stdout.splitlines()
    if not out.ok or not lines or not re.fullmatch(r"[\d,\-\s]+", lines[0] or "x"):
        return None
    facts = CpuFacts(online=parse_cpu_list(lines[0]))
    for line in lines[1:]:
        if m := re.search(r"/cpu(\d+)/cpufreq/cpuinfo_max_freq\s+(\d+)\s*$", line):
            facts.max_freq_khz[int(m.group(1))] = int(m.group(2))
    return facts if facts.online else None


def fastest_online(facts: CpuFacts) -> list[int]:
    """The online cores of the highest max frequency (the top cluster); [] when none is known."""
    known = {cpu: f for cpu, f in facts.max_freq_khz.items() if cpu in facts.online}
    if not known:
        return []
    top = max(known.values())
    return sorted(cpu for cpu, f in known.items() if f == top)


def _ghz(facts: CpuFacts, cpus: list[int]) -> str:
    freqs = {facts.max_freq_khz.get(c) for c in cpus} - {None}
    return f", {max(freqs) / 1e6:.2f} GHz" if freqs else ""


def choose_pinning(profile: dict | None, facts: CpuFacts | None, device: str) -> Pinning:
    """The cores to pin to: the profile's big cores that are online, else the fastest online ones."""
    wanted = mask_cpus(profile["big_cores_mask"]) if profile and profile.get("big_cores_mask") else None
    if facts is None:
        if wanted:
            return Pinning(wanted, None, f"could not read {CPU_ROOT}/online: pinned to the profile's cores "
                                         f"{format_cpus(wanted)} unchecked")
        return Pinning(None, None, f"no device profile for {device} and {CPU_ROOT}/online unreadable: ran "
                                   f"without CPU pinning (add one to mixdeploy/bench/device_profiles.json)")
    online = facts.online
    if wanted:
        kept = [c for c in wanted if c in online]
        if kept == wanted:
            return Pinning(kept, online)
        if kept:
            return Pinning(kept, online, f"the profile's big cores {format_cpus(wanted)}: "
                                         f"{format_cpus(set(wanted) - set(kept))} offline now (online: "
                                         f"{format_cpus(online)}); pinned to {format_cpus(kept)}")
    fastest = fastest_online(facts)
    if not fastest:
        why = (f"the profile's big cores {format_cpus(wanted)} are offline now" if wanted
               else f"no device profile for {device}")
        return Pinning(None, online, f"{why} and no cpuinfo_max_freq is readable (online: "
                                     f"{format_cpus(online)}): ran without CPU pinning")
    if wanted:
        return Pinning(fastest, online, f"the profile's big cores {format_cpus(wanted)} are all offline now "
                                        f"(online: {format_cpus(online)}): pinned to the fastest online "
                                        f"cores {format_cpus(fastest)}{_ghz(facts, fastest)}")
    return Pinning(fastest, online, f"no device profile for {device}: pinned to its fastest online cores "
                                    f"{format_cpus(fastest)}{_ghz(facts, fastest)} (cpuinfo_max_freq; add a "
                                    f"profile to mixdeploy/bench/device_profiles.json to choose)")


def default_threads(profile: dict | None, pinning: Pinning) -> int:
    """The profile's thread count, never more than the cores pinned to; one per pinned core without one."""
    if pinning.cpus:
        return min(profile.get("threads", len(pinning.cpus)), len(pinning.cpus)) if profile else len(pinning.cpus)
    return (profile or {}).get("threads", 1)

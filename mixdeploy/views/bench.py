"""What `mixdeploy bench` prints for people: progress and details on stderr, tables on stdout.

BenchShow is handed to mixdeploy.bench.targets.run_bench, which calls it as each file and each
phone is done; with `quiet` (--json) it prints nothing of that, so stdout holds the JSON only.
The consoles and the progress-bar factory come from the command layer (mixdeploy.commands._console).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable

from rich.console import Console
from rich.markup import escape
from rich.table import Table


class BenchShow:
    def __init__(self, out: Console, err: Console, quiet: bool, progress: Callable):
        self.out, self.err, self.quiet = out, err, quiet
        self._progress = progress      # stage_progress(enabled=...) -> a callback(stage, done, total)

    def starting(self, text: str) -> None:
        if not self.quiet:
            self.err.print(escape(text))

    def progress(self) -> contextlib.AbstractContextManager:
        return self._progress(enabled=not self.quiet)

    # --- phones -------------------------------------------------------------------------------------

    def fleet_done(self, outcome) -> None:
        """A fleet phone finished (called from its server's thread)."""
        from mixdeploy.bench.phone import PhoneFailure

        if self.quiet:
            return
        if isinstance(outcome, PhoneFailure):
            self.err.print(f"[red]failed[/] {escape(outcome.server)}/{escape(outcome.serial)}: "
                           f"{escape(_first_line(outcome.error))}")
        else:
            self.err.print(f"done {escape(outcome.server)}/{escape(outcome.device.serial)}: median "
                           f"{outcome.median_ms:.3f} ms")

    def phone(self, result) -> None:
        from mixdeploy.bench.cpus import format_cpus

        if self.quiet:
            return
        state = result.device
        self.err.print(f"[bold]{escape(str(state.model))}[/] ({escape(result.server)}/{escape(str(state.serial))}) "
                       f"Android {state.android_version}, SoC {state.soc or state.board_platform}, battery "
                       f"{state.battery_level}%, thermal status {state.thermal_status}; pushed: "
                       + ", ".join(f"{k} ({'pushed' if v else 'cached'})" for k, v in result.pushed.items()))
        online = format_cpus(result.online_cpus) if result.online_cpus else "unknown"
        self.err.print(f"{result.threads} thread(s), " + (f"pinned with taskset {result.cpu_mask}" if result.cpu_mask
                                                          else "unpinned") + f"; CPUs online: {online}")
        for note in result.notes:
            self.err.print(f"[yellow]note:[/] {escape(note)}")
        if result.benchmark.op_profile:
            self.out.print(_op_profile_table(result.benchmark.op_profile))
        for slow in result.slow_depthwise:
            self.err.print(f"[red]slow depthwise[/] {escape(slow.layer or slow.name)} {slow.kernel[0]}x{slow.kernel[1]} "
                           f"ran as {escape(slow.node_type)} ({slow.avg_ms:.3f} ms): consider --lowering decompose")
        if result.parity:
            p = result.parity
            diff = p.output_difference
            steps = f", by at most {diff.max_steps} steps" if diff.max_steps else ""
            self.err.print(f"on-device parity vs host LiteRT ({p.count} inputs): top-1 agreement "
                           f"{p.top1_agreement:.3f}, cosine min {p.cosine_min:.5f}, max abs err {p.max_abs_err:.3g}; "
                           f"{diff.differing}/{diff.values} {diff.dtype} output values differ{steps}")

    # --- the ARM64 twin --------------------------------------------------------------------------------

    def twin(self, result) -> None:
        if self.quiet:
            return
        inside = result.inside
        self.err.print(f"[bold]{escape(result.device)}[/]: ran on {inside['machine']} "
                       f"({escape(str(inside['cpu_model']))}, features {', '.join(inside['features']) or 'none'}), "
                       f"ai-edge-litert {inside['ai_edge_litert']} inside, {inside['delegate_nodes']} XNNPACK "
                       f"partition(s); host {result.host['machine']} ai-edge-litert {result.host['ai_edge_litert']}")
        self.out.print(_twin_table(result))
        diff = result.vs_host.output_difference
        if result.vs_torch is not None and result.vs_torch.reference_top1 is not None:
            self.err.print(f"PyTorch top-1 on these inputs: {result.vs_torch.reference_top1 * 100:.2f}%")
        if diff.steps:
            self.err.print(f"{diff.dtype} output values off the host's by N steps: "
                           + ", ".join(f"{n} by {k}" for k, n in diff.steps.items()))
        for note in result.notes:
            self.err.print(f"[yellow]note:[/] {escape(note)}")

    # --- the end -----------------------------------------------------------------------------------------

    def summary(self, outcome) -> None:
        """The latency table (none for the twin, which measures no latency) and where the plot went."""
        from mixdeploy.bench import report

        if outcome.twin:
            return
        self.out.print(report.latency_table(outcome.rows, failures=outcome.failures))
        if outcome.plot and outcome.rows:
            self.err.print(escape(f"plot written to {outcome.plot}"))

    def failures(self, failures) -> None:
        """Printed with --json too: the JSON has them, this line says why the exit code is 1."""
        if failures:
            self.err.print(f"[red]{len(failures)} run(s) failed[/]: " + "; ".join(
                escape(f"{f.server}/{f.serial}: {_first_line(f.error) or 'failed'}") for f in failures))


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def _op_profile_table(rows) -> Table:
    table = Table(title="per-op profile (top 15 by avg ms)")
    for column in ("node type", "avg ms", "%", "name"):
        table.add_column(column)
    for row in sorted(rows, key=lambda r: -r.avg_ms)[:15]:
        # Names like `[conv_stem]:0` would be read as rich markup: escape them.
        table.add_row(escape(row.node_type), f"{row.avg_ms:.3f}",
                      f"{row.percent:.1f}" if row.percent is not None else "-", escape(row.name))
    return table


def _twin_table(result) -> Table:
    table = Table(title=escape(f"{Path(result.model_path).name} on {result.device}: {result.images} inputs "
                               f"from {result.data}"))
    # Narrow columns: the table fits 80 columns (CI logs); the JSON has every metric.
    for column in ("outputs", "agree", "top-1", "cos min", "max|err|", "differ", "steps"):
        table.add_column(column, justify="left" if column == "outputs" else "right", no_wrap=True)
    p, diff = result.vs_host, result.vs_host.output_difference
    table.add_row("arm64 vs x86", f"{p.top1_agreement * 100:.2f}%", "-", f"{p.cosine_min:.6f}",
                  f"{p.max_abs_err:.3g}", f"{diff.differing}/{diff.values} {diff.fraction * 100:.1f}%",
                  "-" if diff.max_steps is None else str(diff.max_steps))
    for label, m in (("arm64 vs torch", result.vs_torch), ("x86 vs torch", result.host_vs_torch)):
        if m is not None:
            table.add_row(label, f"{m.top1_agreement * 100:.2f}%", "-" if m.top1 is None else f"{m.top1 * 100:.2f}%",
                          f"{m.min_cosine:.6f}", f"{m.max_abs_error:.3g}", "-", "-")
    return table

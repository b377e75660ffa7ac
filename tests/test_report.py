"""`mixdeploy report`: a real release (export + host bench + phone bench + parity of the 32-px
checkpoint) rendered to HTML and opened in headless Chromium at laptop and phone widths.

The numbers on the page are checked against the JSON the commands wrote and against the files
on disk; flips against a confusion count done here; the baseline comparison against JSON whose
latencies and accuracies were changed by known amounts.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import headless_chromium
from cli import cli
from mixdeploy import parity
from mixdeploy.report.baseline import Tolerances, compare_inputs
from mixdeploy.report.build import latency_rows
from mixdeploy.report.inputs import collect

WIDTHS = (1280, 390)     # a laptop, a phone (iPhone 12-15 CSS width)
REPORT_LINK = "../report.html"


def run_cli(*args, expect=(0,)):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code in expect, (result.exit_code, result.output, result.exception)
    return result


def _bench_on_emulated_phone(tflite: Path, out: Path, root: Path) -> None:
    """`bench --op-profile --json` on the emulated Pixel 7 of test_bench_phone (real adb, host LiteRT)."""
    from adb_emulator import FAKE_TOOL, AdbLab

    tool = root / "benchmark_model"
    tool.write_text(f"#!{sys.executable}\n" + FAKE_TOOL.read_text())
    tool.chmod(0o755)
    (root / "lab").mkdir()
    lab = AdbLab(root / "lab", "/usr/bin/adb")
    saved = {k: os.environ.get(k) for k in ("ANDROID_ADB_SERVER_PORT", "HOME", "ANDROID_SERIAL")}
    try:
        lab.add("pixel", model="Pixel 7")
        os.environ.update({k: lab.env[k] for k in ("ANDROID_ADB_SERVER_PORT", "HOME")})
        os.environ.pop("ANDROID_SERIAL", None)
        result = run_cli("bench", tflite, "--device", "pixel", "--benchmark-binary", tool, "--runs", 3,
                         "--warmup", 1, "--op-profile", "--json")
        out.write_text(result.stdout)
    finally:
        lab.close()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def release(trained_checkpoint, tmp_path_factory):
    """One release folder as CI would keep it: export/, bench.json, phone.json, parity/."""
    pytest.importorskip("websocket", reason="pip install websocket-client (bash scripts/setup.sh test)")
    root = tmp_path_factory.mktemp("release")
    folder = root / "release"
    export = folder / "export"
    run_cli("export", trained_checkpoint, "--int8", "--calib", "fashion-mnist", "--calib-count", 32,
            "--parity-count", 50, "--lowering", "decompose", "-o", export, "--json")
    files = [export / "model_int8.tflite", export / "model_fp32.tflite"]
    bench = run_cli("bench", *files, "--device", "host", "--threads", 1, "--runs", 5, "--warmup", 1, "--json")
    (folder / "bench.json").write_text(bench.stdout)
    if Path("/usr/bin/adb").exists():
        # The phone run benches the `split` lowering of the same checkpoint: decompose leaves no
        # depthwise kernel over 25 taps, so its profile would have no slow depthwise conv to show.
        split = root / "split"
        run_cli("export", trained_checkpoint, "--int8", "--calib", "fashion-mnist", "--calib-count", 8,
                "--parity-count", 10, "--lowering", "split", "-o", split, "--json")
        _bench_on_emulated_phone(split / "model_int8.tflite", folder / "phone.json", root)
    # --keep-float auto: blame the int8 model, convert again with its worst layers in float, verify
    run_cli("parity", trained_checkpoint, "--tflite", files[0], "--tflite", files[1], "--data", "fashion-mnist",
            "--limit", 500, "--keep-float", "auto", "--calibration-count", 32, "--blame-images", 8,
            "--report", folder / "parity", "--report-link", REPORT_LINK, "--no-progress", expect=(0, 1))
    out = root / "out"
    made = run_cli("report", folder, "-o", out / "report.html", "--markdown", out / "report.md", "--json")
    return {"folder": folder, "export": export, "out": out, "written": json.loads(made.stdout),
            "manifest": json.loads((export / "manifest.json").read_text()),
            "bench": json.loads((folder / "bench.json").read_text()),
            "phone": json.loads((folder / "phone.json").read_text()) if (folder / "phone.json").exists() else None,
            "parity": json.loads((folder / "parity" / "parity.json").read_text())}


def _number(text: str) -> float:
    return float(re.sub(r"[^\d.+-]", "", text))


def _decimals(text: str) -> int:
    digits = re.sub(r"[^\d.]", "", text)
    return len(digits.split(".")[1]) if "." in digits else 0


def assert_shows(shown: dict[str, str], key: str, value: float, scale: float = 1.0) -> None:
    """The page shows `value` (times `scale`) under `key`, rounded to the digits it prints."""
    assert key in shown, f"{key} not on the page; keys: {sorted(shown)[:10]}..."
    text = shown[key]
    assert abs(_number(text) - value * scale) <= 0.5 * 10 ** -_decimals(text) + 1e-9, (key, text, value)


PAGE_FACTS = """(() => ({
  images: [...document.images].map(i => ({w: i.naturalWidth, h: i.naturalHeight, done: i.complete,
                                          src: i.src.slice(0, 26)})),
  shown: Object.fromEntries([...document.querySelectorAll('[data-key]')].map(e => [e.dataset.key, e.textContent])),
  slow: document.querySelectorAll('#op-profile td.flag-slow').length,
  pageWidth: document.documentElement.scrollWidth, viewport: window.innerWidth,
}))()"""


@pytest.mark.slow
@pytest.mark.skipif(not headless_chromium.available(), reason="needs Debian's chromium: apt-get install -y chromium")
def test_report_loads_clean_in_chromium_at_laptop_and_phone_width(release, tmp_path):
    html = release["out"] / "report.html"
    plots = [p for s in release["written"]["sections"] for p in s["plots"]]
    backends = release["parity"]["backends"]
    flipped = [b for b in backends if b["flips"]]
    assert flipped, "500 images and no int8 flip: the flips plot is not exercised"
    changed_classes = any(any(b["per_class_delta_points"].values()) for b in backends)
    # latency, blame, op histogram; class deltas and one flips plot per backend that flips; op profile (phone)
    assert len(plots) == 3 + changed_classes + len(flipped) + (release["phone"] is not None)
    with headless_chromium.Browser() as browser:
        for width in WIDTHS:
            browser.open(html.as_uri(), width)
            facts = browser.evaluate(PAGE_FACTS)
            assert browser.console_errors() == []
            # self-contained: the page and its data: images, nothing fetched from anywhere
            assert {url.split(":")[0] for url in browser.requested_urls()} <= {"file", "data"}
            assert len(facts["images"]) == len(plots)
            assert all(i["done"] and i["w"] > 0 and i["h"] > 0 for i in facts["images"]), facts["images"]
            assert all(i["src"] == "data:image/svg+xml;base64," for i in facts["images"])
            # the page never scrolls sideways; wide tables scroll in their own box
            assert facts["pageWidth"] <= facts["viewport"] == width
            shown = facts["shown"]
            model = release["parity"]["model"]
            for b in backends:
                assert_shows(shown, f"agreement:{model}:{b['backend']}", b["top1_agreement"], 100)
                for f in b["flips"][:12]:
                    assert_shows(shown, f"flips:{model}:{b['backend']}:{f['reference']}->{f['candidate']}", f["count"])
            for doc in (release["bench"], release["phone"] or {"table": []}):
                for row in doc["table"]:
                    assert_shows(shown, f"latency:{row['label']}:{row['target']}:{row['config']}", row["median_ms"])
            for f in release["manifest"]["files"]:
                key = f"bytes:{release['manifest']['model']['name']}:{f['path']}"
                assert int(_number(shown[key])) == f["bytes"] == (release["export"] / f["path"]).stat().st_size
            if release["phone"] is not None:
                assert facts["slow"] == len(release["phone"]["results"][0]["slow_depthwise"]) > 0
        browser.screenshot(tmp_path / "phone.png")
        assert (tmp_path / "phone.png").stat().st_size > 10_000


@pytest.mark.slow
def test_report_sections_come_from_every_input(release):
    sections = {s["id"]: s for s in release["written"]["sections"]}
    assert list(sections) == ["summary", "latency", "op-profile", "parity", "blame", "graph"]
    assert sections["latency"]["plots"] == ["latency-vs-macs"] and not sections["latency"]["notes"]
    assert sections["blame"]["plots"] and not sections["blame"]["notes"]      # blame and the verified fix
    html = (release["out"] / "report.html").read_text()
    fix = release["parity"]["blame"]["fix"]
    assert "The fix, verified: " + ", ".join(fix["keep_float"]) in html
    # the MixConv table lists every layer the rewrite recognised, with the lowering it applied
    for layer in release["manifest"]["stages"]["rewrite"]["lowering_choices"]:
        assert f"<td>{layer}</td>" in html
    assert "<td>decompose</td>" in html
    # tool versions from the manifest
    assert f"<td>{release['manifest']['tools']['tensorflow-cpu']}</td>" in html


@pytest.mark.slow
def test_markdown_digest_has_the_tables_and_links_every_plot_into_the_html(release):
    markdown = (release["out"] / "report.md").read_text()
    for b in release["parity"]["backends"]:
        assert f"| {b['backend']} |" in markdown and f"{b['top1_agreement'] * 100:.2f}%" in markdown
    links = re.findall(r"\]\(([^)#]+)#([\w-]+)\)", markdown)
    plots = [p for s in release["written"]["sections"] for p in s["plots"]]
    assert sorted(anchor for _, anchor in links) == sorted(plots)
    html = (release["out"] / "report.html").read_text()
    for target, anchor in links:
        assert (release["out"] / target).resolve() == (release["out"] / "report.html").resolve()
        assert f'id="{anchor}"' in html


@pytest.mark.slow
def test_parity_junit_links_to_the_report(release):
    junit = ET.parse(release["folder"] / "parity" / "parity-junit.xml").getroot()
    [prop] = junit.findall(".//properties/property")
    assert (prop.get("name"), prop.get("value")) == (parity.JUNIT_REPORT_PROPERTY, REPORT_LINK)
    assert all(f.text.endswith(f"report: {REPORT_LINK}") for f in junit.findall(".//failure"))


# ---------------------------------------------------------------- against a baseline


def _baseline_copy(release, root: Path, latency_factor: float, agreement_shift: float) -> Path:
    """The release's folder as an older release: latencies times `latency_factor`, agreements lowered."""
    old = root / "old"
    shutil.copytree(release["folder"], old, ignore=shutil.ignore_patterns("*.onnx", "*.tflite"))
    for name in ("bench.json", "phone.json"):
        if (old / name).exists():
            doc = json.loads((old / name).read_text())
            for row in doc["table"]:
                row["median_ms"] *= latency_factor
            (old / name).write_text(json.dumps(doc))
    doc = json.loads((old / "parity" / "parity.json").read_text())
    for b in doc["backends"]:
        b["top1_agreement"] -= agreement_shift
    (old / "parity" / "parity.json").write_text(json.dumps(doc))
    return old


@pytest.mark.slow
def test_baseline_flags_what_got_slower_and_what_got_more_accurate(release, tmp_path):
    old = _baseline_copy(release, tmp_path, latency_factor=0.5, agreement_shift=0.01)   # now 2x slower, +1 pt
    now_inputs, old_inputs = collect([release["folder"]]), collect([old])
    changes = compare_inputs(now_inputs, old_inputs, Tolerances(), latency_rows(now_inputs), latency_rows(old_inputs))
    by_what = {}
    for c in changes.rows:
        by_what.setdefault(c.what, []).append(c)
    assert by_what["latency"] and all(c.flagged and c.worse and c.verdict == "⚑ slower" for c in by_what["latency"])
    assert all(c.delta == pytest.approx(100.0) for c in by_what["latency"])
    assert all(c.flagged and not c.worse and c.verdict == "more accurate" for c in by_what["top-1 agreement"])
    assert all(c.delta == pytest.approx(1.0) for c in by_what["top-1 agreement"])
    assert all(not c.flagged for c in by_what["file size"] + by_what["top-1"])     # unchanged
    result = run_cli("report", release["folder"], "--baseline", old, "-o", tmp_path / "r.html", "--no-progress")
    page = (tmp_path / "r.html").read_text()
    assert 'id="baseline"' in page and page.count('class="flag-worse">⚑ slower<') == len(by_what["latency"])
    assert "report written to" in result.output


@pytest.mark.slow
def test_changes_within_tolerance_are_not_flagged(release, tmp_path):
    old = _baseline_copy(release, tmp_path, latency_factor=0.96, agreement_shift=0.0009)  # now 4% slower, +0.09 pt
    now_inputs, old_inputs = collect([release["folder"]]), collect([old])
    changes = compare_inputs(now_inputs, old_inputs, Tolerances(5.0, 0.1), latency_rows(now_inputs),
                             latency_rows(old_inputs))
    assert changes.rows and not [c for c in changes.rows if c.flagged]


# ---------------------------------------------------------------- missing pieces, bad input


@pytest.mark.slow
def test_an_export_alone_still_makes_a_report_with_notes_for_the_rest(release, tmp_path):
    result = run_cli("report", release["export"], "-o", tmp_path / "r.html", "--json")
    notes = {s["id"]: s["notes"] for s in json.loads(result.stdout)["sections"]}
    assert any("mixdeploy bench" in n for n in notes["latency"])
    assert any("mixdeploy parity" in n for n in notes["parity"]) and notes["blame"]
    assert not notes["graph"]
    page = (tmp_path / "r.html").read_text()
    assert "the export&#x27;s own check" in page      # the manifest's quick parity stands in


def test_bad_inputs_exit_2_with_a_message_and_write_nothing(tmp_path):
    garbage, unknown, folder, a_file = (tmp_path / "garbage.json", tmp_path / "unknown.json",
                                        tmp_path / "empty", tmp_path / "plain.txt")
    garbage.write_text("{not json")
    unknown.write_text(json.dumps({"hello": 1}))
    folder.mkdir()
    a_file.write_text("x")
    bench_without_fields = tmp_path / "bench.json"
    bench_without_fields.write_text(json.dumps({"results": [], "table": [{"label": "x"}]}))
    truncated_parity = tmp_path / "parity.json"
    truncated_parity.write_text(json.dumps({"reference": {"backend": "pytorch"}, "checks": [],
                                            "backends": [{"backend": "tflite:m.tflite"}]}))
    out = tmp_path / "out" / "report.html"
    cases = [
        ([tmp_path / "missing"], out, "does not exist"),
        ([garbage], out, "is not readable JSON"),
        ([unknown], out, "of a shape `mixdeploy report` does not know"),
        ([folder], out, "nothing to report"),
        ([bench_without_fields], out, "lacks fields"),
        ([truncated_parity], out, "an entry of `backends` lacks top1_agreement, images"),
        ([unknown], folder, "is a folder"),
        ([unknown], a_file / "report.html", "is a file, not a folder"),
    ]
    for inputs, output, message in cases:
        result = CliRunner().invoke(cli, ["report", *map(str, inputs), "-o", str(output), "--no-progress"])
        assert result.exit_code == 2, (inputs, result.output)
        assert message in result.output and "Traceback" not in result.output
        assert isinstance(result.exception, SystemExit)      # exited with the message, raised nothing else
    assert not (tmp_path / "out").exists()
    result = CliRunner().invoke(cli, ["report", str(folder), "--baseline", str(tmp_path / "gone"), "-o", str(out)])
    assert result.exit_code == 2 and "--baseline" in result.output


def test_a_failed_run_leaves_the_previous_report_untouched(tmp_path):
    out = tmp_path / "report.html"
    out.write_text("previous report")
    (tmp_path / "broken.json").write_text("[1, 2")
    result = CliRunner().invoke(cli, ["report", str(tmp_path / "broken.json"), "-o", str(out)])
    assert result.exit_code == 2
    assert out.read_text() == "previous report" and not list(tmp_path.glob(".*.part"))


# ---------------------------------------------------------------- parity's flips and JUnit link


def test_flips_count_each_changed_prediction_by_class_pair():
    rng = np.random.default_rng(0)
    reference = rng.standard_normal((500, 4)).astype(np.float32)
    candidate = reference + rng.standard_normal((500, 4)).astype(np.float32) * 0.7
    names = ["cat", "dog", "cow", "owl"]
    metrics = parity.compare(reference, candidate, class_names=names)
    confusion = np.zeros((4, 4), int)                       # counted independently of top1_flips
    np.add.at(confusion, (reference.argmax(1), candidate.argmax(1)), 1)
    expected = {(names[r], names[c]): int(confusion[r, c]) for r in range(4) for c in range(4)
                if r != c and confusion[r, c]}
    assert {(f["reference"], f["candidate"]): f["count"] for f in metrics.flips} == expected
    assert sum(expected.values()) == round((1 - metrics.top1_agreement) * 500) > 0
    counts = [f["count"] for f in metrics.flips]
    assert counts == sorted(counts, reverse=True)
    assert parity.compare(reference, reference).flips == []


def test_junit_failures_name_the_report_link():
    reference = np.eye(10, dtype=np.float32)
    broken = np.roll(reference, 1, axis=1)
    metrics = parity.compare(reference, broken, backend="tflite:x.tflite")
    checks = parity.check_thresholds(metrics, parity.Thresholds())
    result = parity.ParityResult(model="m", data="d", images=10, reference=metrics, backends=[metrics],
                                 thresholds=parity.Thresholds(), checks=checks)
    root = ET.fromstring(parity.to_junit_xml(result, "https://ci.example/report.html"))
    assert root.find(".//property").get("value") == "https://ci.example/report.html"
    [failure] = root.findall(".//failure")
    assert failure.text.endswith("report: https://ci.example/report.html")
    assert ET.fromstring(parity.to_junit_xml(result)).find(".//properties") is None


def test_a_change_of_exactly_the_tolerance_is_not_flagged():
    from mixdeploy.report.baseline import Change

    # 1781 -> 1779 of 2000 images right: 0.10 points, which float arithmetic makes 0.10000000000000853
    on_limit = Change("top-1", "m b", 0.8905 * 100, 0.8895 * 100, "%", False, 0.1, False)
    assert abs(on_limit.delta) > 0.1 and not on_limit.flagged
    over = Change("top-1", "m b", 0.8905 * 100, 0.8890 * 100, "%", False, 0.1, False)
    assert over.flagged and over.worse and over.verdict == "⚑ less accurate"

"""Bad input, faults and interruptions, through every command of the CLI.

Each test is one case of docs/faults.md: it asserts the exit code, the gist of the message, that
no traceback is shown, and what is on disk afterwards; and it renders the case's row of the
table from what the command printed. The test fails when docs/faults.md does not hold exactly
that row, so the table cannot drift from the behaviour. Regenerate it with
    MIXDEPLOY_WRITE_FAULTS=1 python3 -m pytest -q tests/test_faults.py

Cheap models throughout: a 16-px ONNX classifier built here (one MixConv, 10 classes), a
random-init mixnet-s at 32 px with --lowering split, and the session fixtures of conftest.py.
Real signals (SIGTERM, SIGHUP, SIGKILL) go to `python3 -m cli` subprocesses mid-export; the
file-system faults use small tmpfs mounts (root only, as CI runs; skipped otherwise).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cli import cli
from model_support import tiny_classifier

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "faults.md"
WRITE_DOC = os.environ.get("MIXDEPLOY_WRITE_FAULTS") == "1"
M32 = ("mixnet-s", "--num-classes", "10", "--input-size", "32", "--lowering", "split")
SPLIT = ("--lowering", "split")      # the deterministic lowering; `auto` would time every layer


# ---------------------------------------------------------------- the cases and their table

@dataclass(frozen=True)
class Case:
    case: str          # what goes wrong
    command: str       # how (the shape of the command line)
    after: str         # what is on disk afterwards (each test asserts it)


CASES = {
    # export: the output folder
    "export-out-under-file": Case("output folder under a file", "export mixnet-s -o notes.txt/sub",
                                  "nothing created; the file untouched"),
    "export-out-too-long": Case("output folder name over 255 bytes", "export mixnet-s -o xxx...x",
                                "nothing created"),
    "export-out-read-only": Case("output folder on a read-only file system", "export mixnet-s -o RO/out",
                                 "nothing written"),
    "export-disk-full": Case("disk full while writing (1 MB tmpfs)", "export mixnet-s -o FULL/out",
                             "the file system empty again: no staging folder, no output folder"),
    "export-locked": Case("another export is writing into the folder", "export tiny.onnx -o OUT (locked)",
                          "the folder untouched"),
    "export-failed-new-folder": Case("export fails mid-way into a new folder", "export erf.onnx -o new/a/b",
                                     "no folder created (new/ absent)"),
    # export: inputs checked at the door
    "export-nan-weights": Case("checkpoint with a NaN weight", "export nan.pt", "nothing created"),
    "export-inf-onnx-weights": Case("ONNX model with an infinite initializer", "export inf.onnx",
                                    "nothing created"),
    "export-garbage-weights": Case("--weights is not a checkpoint", "export mixnet-s --weights garbage.pt",
                                   "nothing created"),
    "export-truncated-onnx": Case("truncated ONNX source", "export cut.onnx", "nothing created"),
    "export-nan-calib": Case("calibration .npy holding NaN", "export tiny.onnx --int8 --calib nan.npy",
                             "nothing created; refused before the model is loaded"),
    "export-missing-calib": Case("--calib folder missing", "export tiny.onnx --int8 --calib nope",
                                 "nothing created; refused before the model is loaded"),
    "export-missing-parity-data": Case("--parity-data list file missing", "export tiny.onnx --parity-data nope.txt",
                                       "nothing created; refused before the model is loaded"),
    "export-broken-calib-image": Case("truncated PNG in the calibration folder",
                                      "export tiny.onnx --int8 --calib imgs/", "nothing created; refused before "
                                      "the model is loaded"),
    "export-parity-wrong-classes": Case("labelled parity data of 3 classes, model of 10",
                                        "export tiny.onnx --parity-data three_classes/",
                                        "nothing created; refused before the ONNX export"),
    "export-truncated-fashion-mnist": Case("truncated Fashion-MNIST file", "export tiny.onnx --int8 --calib fashion-mnist",
                                           "nothing created"),
    "export-calib-unused": Case("--calib with --format onnx (nothing to calibrate)",
                                "export tiny.onnx --format onnx --calib fashion-mnist", "the export, as asked"),
    # export: results and what the folder holds
    "export-nonfinite-outputs": Case("model whose outputs overflow to inf", "export huge.onnx",
                                     "nothing written (exit 1: the result is unusable)"),
    "export-markup-in-path": Case("`[` and `]` in the output path", "export tiny.onnx -o '[/x][bold]out'",
                                  "the export, in the folder of that literal name"),
    "export-umask": Case("artifact file modes", "umask 022 / 077; export tiny.onnx", "files 0644 / 0600"),
    "export-replaces-previous": Case("fp32-only export into a folder holding an int8 export",
                                     "export tiny.onnx -o OUT (OUT has model_int8.tflite)",
                                     "model_int8.tflite gone; manifest lists exactly the files; other files kept"),
    "export-unwritable-cache": Case("lowering cache cannot be written", "MIXDEPLOY_CACHE_DIR=notes.txt/c export "
                                    "tiny.onnx --lowering auto", "the export; no cache"),
    "export-sigterm": Case("SIGTERM mid-export (timeout, CI cancel, docker stop)", "export mixnet-s -o new",
                           "no folder (the new one removed), no staging"),
    "export-sighup": Case("SIGHUP mid-export into a folder holding an export", "export mixnet-s -o OUT",
                          "the previous export, byte for byte"),
    "export-after-kill-9": Case("next export after a kill -9 mid-export", "export tiny.onnx -o OUT",
                                "the new export; the killed run's staging folder removed"),
    # parity
    "parity-report-under-file": Case("--report under a file", "parity ... --report notes.txt/r",
                                     "nothing ran; the file untouched"),
    "parity-input-size": Case("TFLite input size differs from the preprocessing",
                              "parity mixnet-s --input-size 32 --tflite model16.tflite", "nothing written"),
    "parity-onnx-input-size": Case("--onnx input size differs from the preprocessing",
                                   "parity mixnet-s --input-size 32 --onnx tiny16.onnx", "nothing written"),
    "parity-nan-data": Case("--data .npy holding NaN", "parity tiny.onnx --data nan.npy", "nothing written"),
    "parity-nonfinite-outputs": Case("TFLite model giving NaN (its conv weights NaN)",
                                     "parity tiny.onnx --tflite nan.tflite --min-top1-agreement 0 --report R",
                                     "R/parity.json (strict JSON) with the failed check"),
    "parity-truncated-fashion-mnist": Case("truncated Fashion-MNIST file", "parity ... --data fashion-mnist",
                                           "nothing written"),
    "parity-list-missing-image": Case("list file naming a missing image", "parity ... --data list.txt",
                                      "nothing written"),
    "parity-list-broken-image": Case("list file naming a truncated PNG", "parity ... --data list.txt",
                                     "nothing written"),
    "parity-corrupt-manifest": Case("manifest.json beside the model is not JSON", "parity ... --tflite OUT/m.tflite",
                                    "nothing written"),
    "parity-wrong-classes": Case("labelled data of 3 classes, model of 10", "parity tiny.onnx --data three_classes/",
                                 "nothing written"),
    "parity-markup-in-path": Case("`[` and `]` in the --data path", "parity tiny.onnx --data '[/x]imgs'",
                                  "nothing written (no --report)"),
    "parity-blame-temp": Case("blame of a failing int8 model exported to ONNX for it",
                              "parity ckpt.pt --tflite alone/model_int8.tflite --min-sqnr-db 100",
                              "no mixdeploy-parity-* folder left in the temp folder"),
    # bench
    "bench-plot-under-file": Case("--plot under a file", "bench m.tflite --plot notes.txt/x.png",
                                  "nothing ran; the file untouched"),
    "bench-plot-format": Case("--plot in a format matplotlib cannot write", "bench m.tflite --plot x.txt",
                              "nothing ran"),
    "bench-plot-no-macs": Case("--plot for a model without a manifest (no MACs)", "bench alone.tflite --plot x.png",
                               "nothing ran"),
    "bench-truncated": Case("truncated .tflite", "bench cut.tflite", "nothing written"),
    "bench-threads": Case("--threads 0", "bench m.tflite --threads 0", "nothing ran"),
    "bench-markup-in-path": Case("`[` and `]` in the model path", "bench '[/x]m/model_fp32.tflite'",
                                 "nothing written"),
    # inspect
    "inspect-truncated": Case("truncated .tflite", "inspect cut.tflite", "-"),
    "inspect-empty": Case("empty file", "inspect empty.tflite", "-"),
    "inspect-folder": Case("a folder instead of a file", "inspect OUT/", "-"),
    "inspect-markup-in-path": Case("`[` and `]` in the path", "inspect '[/x]/[bold]m.tflite'", "-"),
    # flops
    "flops-nan-weights": Case("checkpoint with a NaN weight", "flops nan.pt", "-"),
    "flops-truncated-onnx": Case("truncated ONNX", "flops cut.onnx", "-"),
    "flops-markup-in-path": Case("`[` and `]` in the path", "flops '[/x]/[bold]net.onnx'", "-"),
    # models
    "models-broken-pipe": Case("reader of the output goes away", "models --json | (exits at once)", "-"),
    "models-typo": Case("unknown command", "model", "-"),
    # report
    "report-out-under-file": Case("-o under a file", "report OUT -o notes.txt/r.html", "nothing written"),
    "report-out-read-only": Case("-o on a read-only file system", "report OUT -o RO/r.html", "nothing written"),
    "report-markup-in-path": Case("`[` and `]` in the -o path", "report OUT -o '[/x]/[bold]r.html'", "the report"),
    # every command
    "debug-flag": Case("--debug on a user error", "--debug export mixnet-s -o notes.txt/sub",
                       "as without --debug; the traceback is shown"),
}

DOC_HEAD = """# Faults: what you see when something goes wrong

Every row is a test in `tests/test_faults.py`: the test runs the case, asserts the exit code, the
message, that no traceback is shown and what is on disk afterwards, and fails when this table does
not hold the row its run produced, so the table cannot drift from what mixdeploy does. Regenerate
it with `MIXDEPLOY_WRITE_FAULTS=1 python3 -m pytest -q tests/test_faults.py`. Paths of the test's
temporary folder are shown as `DIR`.

Exit codes: 0 done; 1 a failed gate or an unusable result (NaN outputs), or a device fault; 2 bad
input or a fault of the machine (full disk, read-only file system); 128+N stopped by signal N
(129 SIGHUP, 130 Ctrl-C, 143 SIGTERM), after removing what the run had started writing. A
`--debug` before the command shows the traceback behind a message. More on each behaviour:

- **Checked before work.** Output paths (`-o`, `--report`, `--plot`) are checked writable, data
  sources (`--calib`, `--parity-data`, `--data`) are opened and every image decoded, `.npy`
  values checked finite, labels checked against the model's classes, and weights (checkpoints,
  ONNX initializers) checked finite, all before the first model is exported.
- **Checked on the way out.** NaN or infinite outputs fail the parity gate whatever the
  thresholds; an export whose models give them writes nothing (exit 1); JSON is written strict
  (no bare `NaN`).
- **The output folder.** An export takes a lock (`.mixdeploy-export.lock`, removed afterwards),
  stages its files in a hidden `.mixdeploy-export-*` folder, and publishes them as one set:
  files of the previous export that the new one does not write are removed, `manifest.json` is
  written last. A failed or interrupted export leaves the folder as it was; a staging folder left
  by a killed export is removed, with a note, by the next export into the folder. Files get the
  umask's mode.
- **Temporary files.** Whatever a run writes outside its output (blame's ONNX export, inputs for
  a phone or the ARM64 twin) lies in one folder, `$TMPDIR/mixdeploy-scratch-PID-*`, removed when
  the run ends; one left by a killed run (its process gone) is removed by the next run.

| case | command (`mixdeploy ...`) | what you see | exit | on disk afterwards |
|---|---|---|---|---|
"""

_rows: dict[str, str] = {}


@dataclass
class Outcome:
    exit_code: int
    output: str                       # stdout and stderr, as a terminal shows them
    exception: BaseException | None = None


def run(*args, env: dict | None = None) -> Outcome:
    result = CliRunner().invoke(cli, [str(a) for a in args], env={"COLUMNS": "2000", **(env or {})})
    return Outcome(result.exit_code, result.output, result.exception)


def _normalize(text: str, tmp: Path) -> str:
    for root in {str(tmp.resolve()), str(tmp)}:
        text = text.replace(root, "DIR")
    text = re.sub(r"pid \d+", "pid N", text)
    text = re.sub(r"\.mixdeploy-export-[\w]+", ".mixdeploy-export-XXXXXXXX", text)
    text = re.sub(r"\(\d+(?:\.\d+)? MB\)", "(N MB)", text)
    text = re.sub(r"x{40,}", "xxx...x", text)
    # a library's own words (protobuf, gzip, PIL) vary with its version; the error type does not
    text = re.sub(r"\((\w+Error): [^()]*\)", r"(\1: ...)", text)
    return _cell(text.strip())


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _row(key: str, seen: str, exit_code: int) -> str:
    case = CASES[key]
    return f"| {_cell(case.case)} | `{_cell(case.command)}` | {seen} | {exit_code} | {_cell(case.after)} |"


def see(key: str, outcome: Outcome, exit_code: int, gist: str, tmp: Path, *, shown: str | None = None,
        traceback_expected: bool = False) -> str:
    """Assert the exit code, the gist and no traceback; check (or record) the case's table row.
    Returns the line that held the gist."""
    assert outcome.exit_code == exit_code, outcome.output[-3000:]
    if not traceback_expected:
        assert "Traceback" not in outcome.output, outcome.output[-3000:]
        assert outcome.exception is None or isinstance(outcome.exception, SystemExit), repr(outcome.exception)
    lines = [line.strip(" │┃") for line in outcome.output.splitlines() if gist in line]
    assert lines, f"{gist!r} not in the output:\n{outcome.output[-3000:]}"
    lines = [line for line in lines if line.startswith(("Error:", "warning:"))] or lines   # the message itself
    row = _row(key, _normalize(shown if shown is not None else lines[0], tmp), exit_code)
    _rows[key] = row
    if not WRITE_DOC:
        assert row in DOC.read_text().splitlines(), (
            f"docs/faults.md does not hold this case's row (regenerate: MIXDEPLOY_WRITE_FAULTS=1 python3 -m pytest "
            f"tests/test_faults.py):\n{row}")
    return lines[0]


@pytest.fixture(scope="module", autouse=True)
def fault_table():
    """MIXDEPLOY_WRITE_FAULTS=1: write docs/faults.md from the rows this run produced (a skipped
    case keeps its row)."""
    yield
    if not WRITE_DOC:
        return
    old = {}
    if DOC.is_file():
        for line in DOC.read_text().splitlines():
            for key, case in CASES.items():
                if line.startswith(f"| {_cell(case.case)} | `{_cell(case.command)}` |"):
                    old[key] = line
    rows = [_rows.get(key) or old.get(key) for key in CASES]
    DOC.write_text(DOC_HEAD + "\n".join(r for r in rows if r) + "\n")


@pytest.fixture(autouse=True)
def wide_consoles():
    """Rich wraps at 80 columns off a terminal; a message on one line is what the table shows."""
    from mixdeploy.commands import _console

    widths = {c: c._width for c in (_console.stderr, _console.stdout)}
    for console in widths:
        console.width = 2000
    yield
    for console, width in widths.items():
        console._width = width


def test_the_fault_table_has_one_row_per_case_in_order():
    if WRITE_DOC:
        pytest.skip("writing docs/faults.md")
    text = DOC.read_text()
    assert text.startswith(DOC_HEAD), "the head of docs/faults.md differs from DOC_HEAD: regenerate it"
    rows = text[len(DOC_HEAD):].strip().splitlines()
    assert [r.split(" | ")[0][2:] for r in rows] == [c.case for c in CASES.values()]
    assert len(CASES) >= 40


# ---------------------------------------------------------------- small models and files

def png(path: Path, value: int = 128, size: int = 20) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(path)
    return path


def truncated_png(path: Path) -> Path:
    data = png(path, size=64).read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def image_folder(root: Path, classes: int = 0, per_class: int = 2) -> Path:
    """A flat folder of PNGs (classes=0) or an ImageFolder with `classes` sub-folders."""
    for i in range(max(classes, 1) * per_class):
        folder = root / f"class{i // per_class}" if classes else root
        png(folder / f"{i}.png", value=30 * i % 256)
    return root


def cut(path: Path, out: Path) -> Path:
    data = path.read_bytes()
    out.write_bytes(data[: len(data) * 2 // 3])
    return out


def poison_first_conv(tflite_in: Path, tflite_out: Path) -> None:
    """The first CONV_2D's weights set to NaN in the flatbuffer (a model that computes NaN)."""
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:
        from tensorflow.lite.python import schema_py_generated as schema
    data = bytearray(tflite_in.read_bytes())
    model = schema.Model.GetRootAsModel(data, 0)
    graph = model.Subgraphs(0)
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        if max(code.BuiltinCode(), code.DeprecatedBuiltinCode()) == schema.BuiltinOperator.CONV_2D:
            weights = model.Buffers(graph.Tensors(op.Inputs(1)).Buffer()).DataAsNumpy()   # a view into `data`
            weights.view(np.float32)[:] = np.nan
            tflite_out.write_bytes(bytes(data))
            return
    raise AssertionError("no CONV_2D in the model")


def hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def strict_json(path: Path):
    def refuse(name):
        raise AssertionError(f"{path} holds a bare {name}")
    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The tiny ONNX classifier, its export (fp32 + int8 TFLite, calibrated on sample photos)
    and a random-init mixnet-s checkpoint with one NaN weight."""
    import torch

    from mixdeploy.models import load_model
    from mixdeploy.models.sources import save_checkpoint

    root = tmp_path_factory.mktemp("fault_files")
    tiny = tiny_classifier(root / "tiny.onnx")
    export = root / "tiny_export"
    done = run("export", tiny, *SPLIT, "--int8", "-o", export)
    assert done.exit_code == 0, done.output
    model = load_model("mixnet-s", num_classes=10, input_size=32)
    with torch.no_grad():
        model.module.conv_stem.weight[0, 0, 0, 0] = float("nan")
    nan_pt = save_checkpoint(root / "nan.pt", model)
    images = image_folder(root / "imgs")
    return {"root": root, "tiny": tiny, "export": export, "fp32": export / "model_fp32.tflite",
            "int8": export / "model_int8.tflite", "nan_pt": nan_pt, "imgs": images}


@contextlib.contextmanager
def tmpfs(where: Path, size: str = "1m", read_only: bool = False):
    """A small tmpfs at `where` (root only: CI runs as root). Skips the test when it cannot mount."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs the suite as root)")
    where.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fashion_mnist_copy(root: Path, split: str) -> Path:
    """Fashion-MNIST's `split` files with the images file cut short (a broken download)."""
    source = Path(os.environ.get("MIXDEPLOY_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))
    prefix = "train" if split == "train" else "t10k"
    images, labels = source / f"{prefix}-images-idx3-ubyte.gz", source / f"{prefix}-labels-idx1-ubyte.gz"
    if not images.exists() or not labels.exists():
        pytest.skip("Fashion-MNIST missing: apt-get install -y dataset-fashion-mnist")
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(labels, root / labels.name)
    with open(images, "rb") as f:
        (root / images.name).write_bytes(f.read(200_000))
    return root


# ---------------------------------------------------------------- export: the output folder

def test_export_into_a_folder_under_a_file(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    out = run("export", *M32, "--format", "onnx", "-o", notes / "sub")
    see("export-out-under-file", out, 2, "is a file, not a folder", tmp_path)
    assert notes.read_text() == "mine" and list(tmp_path.iterdir()) == [notes]


def test_export_into_a_folder_with_a_too_long_name(tmp_path):
    out = run("export", *M32, "--format", "onnx", "-o", tmp_path / ("x" * 300))
    see("export-out-too-long", out, 2, "over the file system's limit", tmp_path)
    assert not list(tmp_path.iterdir())


def test_export_onto_a_read_only_file_system(tmp_path):
    with tmpfs(tmp_path / "ro", read_only=True) as ro:
        out = run("export", *M32, "--format", "onnx", "-o", ro / "out")
        see("export-out-read-only", out, 2, "read-only file system", tmp_path)
        assert not list(ro.iterdir())


def test_export_onto_a_full_disk_leaves_it_empty(tmp_path):
    with tmpfs(tmp_path / "full", size="1m") as full:
        out = run("export", *M32, "--format", "onnx", "-o", full / "out")
        see("export-disk-full", out, 2, "no space left on the device", tmp_path)
        assert not list(full.iterdir())
        assert os.statvfs(full).f_bfree == os.statvfs(full).f_blocks     # every byte given back


def test_a_second_export_into_a_locked_folder_fails_at_once(files, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    lock = out / ".mixdeploy-export.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, f"{os.getpid()}\n".encode())
        result = run("export", files["tiny"], *SPLIT, "--format", "onnx", "-o", out)
        see("export-locked", result, 2, "another export (pid", tmp_path)
        assert f"pid {os.getpid()}" in result.output
        assert [p.name for p in out.iterdir()] == [lock.name]
    finally:
        os.close(fd)


def test_a_failed_export_into_a_new_folder_leaves_no_folder(tmp_path):
    erf = tiny_classifier(tmp_path / "erf.onnx", act="Erf")      # an op the converter does not have
    out = run("export", erf, *SPLIT, "-o", tmp_path / "new" / "a" / "b")
    see("export-failed-new-folder", out, 2, "unsupported ONNX op(s)", tmp_path)
    assert not (tmp_path / "new").exists()


# ---------------------------------------------------------------- export: inputs, at the door

def test_export_refuses_a_checkpoint_with_a_nan_weight(files, tmp_path):
    out = run("export", files["nan_pt"], "--format", "onnx", "-o", tmp_path / "out")
    see("export-nan-weights", out, 2, "conv_stem.weight (1 of 432 values)", files["root"])
    assert not (tmp_path / "out").exists()


def test_export_refuses_an_onnx_model_with_an_infinite_weight(tmp_path):
    source = tiny_classifier(tmp_path / "inf.onnx", poison="fw")
    out = run("export", source, *SPLIT, "-o", tmp_path / "out")
    see("export-inf-onnx-weights", out, 2, "fw (1 of 80 values)", tmp_path)
    assert not (tmp_path / "out").exists()


def test_export_refuses_weights_that_are_not_a_checkpoint(tmp_path):
    garbage = tmp_path / "garbage.pt"
    # fixed bytes, not random ones: torch's reason (quoted in the message and in docs/faults.md) depends on them
    garbage.write_bytes(bytes(range(256)) * 4)
    out = run("export", *M32, "--weights", garbage, "-o", tmp_path / "out")
    see("export-garbage-weights", out, 2, "as a PyTorch checkpoint", tmp_path)
    assert not (tmp_path / "out").exists()


def test_export_refuses_a_truncated_onnx_source(files, tmp_path):
    source = cut(files["tiny"], tmp_path / "cut.onnx")
    out = run("export", source, *SPLIT, "-o", tmp_path / "out")
    see("export-truncated-onnx", out, 2, "is not a readable ONNX model", tmp_path)
    assert not (tmp_path / "out").exists()


def _refused_before_loading(outcome: Outcome) -> None:
    assert "load model" not in outcome.output       # the first stage never started


def test_export_refuses_nan_calibration_data_before_any_work(files, tmp_path):
    images = np.random.default_rng(0).random((4, 16, 16, 3)).astype(np.float32)
    images[2, 0, 0, 0] = np.nan
    np.save(tmp_path / "nan.npy", images)
    out = run("export", files["tiny"], *SPLIT, "--int8", "--calib", tmp_path / "nan.npy", "-o", tmp_path / "out")
    see("export-nan-calib", out, 2, "NaN/inf values (the first in image 2)", tmp_path)
    _refused_before_loading(out)
    assert not (tmp_path / "out").exists()


def test_export_refuses_a_missing_calibration_folder_before_any_work(files, tmp_path):
    out = run("export", files["tiny"], *SPLIT, "--int8", "--calib", tmp_path / "nope", "-o", tmp_path / "out")
    see("export-missing-calib", out, 2, "not found", tmp_path)
    _refused_before_loading(out)
    assert not (tmp_path / "out").exists()


def test_export_refuses_a_missing_parity_list_file_before_any_work(files, tmp_path):
    out = run("export", files["tiny"], *SPLIT, "--parity-data", tmp_path / "nope.txt", "-o", tmp_path / "out")
    see("export-missing-parity-data", out, 2, "not found", tmp_path)
    _refused_before_loading(out)
    assert not (tmp_path / "out").exists()


def test_export_refuses_a_broken_calibration_image_before_any_work(files, tmp_path):
    folder = image_folder(tmp_path / "imgs")
    truncated_png(folder / "z_broken.png")
    out = run("export", files["tiny"], *SPLIT, "--int8", "--calib", folder, "-o", tmp_path / "out")
    see("export-broken-calib-image", out, 2, "z_broken.png as an image", tmp_path)
    _refused_before_loading(out)
    assert not (tmp_path / "out").exists()


def test_export_refuses_parity_data_with_other_classes_before_the_onnx_export(files, tmp_path):
    three = image_folder(tmp_path / "three_classes", classes=3)
    out = run("export", files["tiny"], *SPLIT, "--parity-data", three, "-o", tmp_path / "out")
    see("export-parity-wrong-classes", out, 2, "the data has 3 classes", tmp_path)
    assert "export ONNX" not in out.output
    assert not (tmp_path / "out").exists()


def test_export_names_a_truncated_fashion_mnist_file(files, tmp_path):
    root = fashion_mnist_copy(tmp_path / "fm", "train")
    out = run("export", files["tiny"], *SPLIT, "--int8", "--calib", "fashion-mnist", "-o", tmp_path / "out",
              env={"MIXDEPLOY_FASHION_MNIST_DIR": str(root)})
    see("export-truncated-fashion-mnist", out, 2, "is truncated or corrupt", tmp_path)
    assert "Aborted!" not in out.output
    assert not (tmp_path / "out").exists()


def test_export_says_when_calibration_data_is_not_used(files, tmp_path):
    out = run("export", files["tiny"], *SPLIT, "--format", "onnx", "--calib", "fashion-mnist", "-o", tmp_path / "out")
    see("export-calib-unused", out, 0, "--calib not used", tmp_path)
    assert (tmp_path / "out" / "manifest.json").is_file()


# ---------------------------------------------------------------- export: results, the folder's contents

def test_export_of_a_model_with_overflowing_outputs_writes_nothing(tmp_path):
    huge = tiny_classifier(tmp_path / "huge.onnx", scale=1e38)     # finite weights, inf activations
    out = run("export", huge, *SPLIT, "-o", tmp_path / "out")
    see("export-nonfinite-outputs", out, 1, "NaN or infinite outputs", tmp_path)
    assert not (tmp_path / "out").exists()


def test_export_prints_paths_with_brackets_literally(files, tmp_path):
    target = tmp_path / "[/x][bold]out"
    out = run("export", files["tiny"], *SPLIT, "--format", "onnx", "-o", target)
    line = see("export-markup-in-path", out, 0, "files written to", tmp_path)
    assert line.endswith(f"files written to {target}")
    assert (target / "manifest.json").is_file()


def test_export_files_get_the_umasks_mode(files, tmp_path):
    modes = {}
    for umask in (0o022, 0o077):
        previous = os.umask(umask)
        try:
            out = run("export", files["tiny"], *SPLIT, "--format", "onnx", "-o", tmp_path / f"u{umask:o}")
        finally:
            os.umask(previous)
        assert out.exit_code == 0, out.output
        found = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / f"u{umask:o}").iterdir()}
        assert set(found) == {"manifest.json", "model.onnx", "model.opt.onnx"}
        assert set(found.values()) == {0o666 & ~umask}, found
        modes[umask] = 0o666 & ~umask
    see("export-umask", out, 0, "files written to", tmp_path,
        shown=", ".join(f"umask {u:03o}: every file {m:04o}" for u, m in modes.items()))


def test_export_replaces_the_previous_artifact_set_as_a_whole(files, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(files["export"], out)
    (out / "notes.txt").write_text("mine")
    assert (out / "model_int8.tflite").is_file()
    result = run("export", files["tiny"], *SPLIT, "-o", out)          # fp32 only this time
    names = sorted(p.name for p in out.iterdir())
    assert names == ["manifest.json", "model.onnx", "model.opt.onnx", "model_fp32.tflite", "notes.txt"]
    manifest = strict_json(out / "manifest.json")
    assert sorted(r["path"] for r in manifest["files"]) == [n for n in names if n not in ("manifest.json", "notes.txt")]
    assert set(manifest["stages"]["convert"]) == {"fp32"} and "quantization" not in manifest
    see("export-replaces-previous", result, 0, "model_fp32.tflite", tmp_path,
        shown=f"the export's table; afterwards: {', '.join(names)}")


def test_export_with_an_unwritable_lowering_cache_still_exports(files, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    with pytest.warns(RuntimeWarning, match="cannot save the lowering timings") as warned:
        out = run("export", files["tiny"], "--format", "onnx", "--lowering", "auto", "-o", tmp_path / "out",
                  env={"MIXDEPLOY_CACHE_DIR": str(notes / "cache")})
    message = next(str(w.message) for w in warned if "lowering timings" in str(w.message))
    see("export-unwritable-cache", out, 0, "model.opt.onnx", tmp_path, shown=f"warning: {message}")
    assert (tmp_path / "out" / "manifest.json").is_file() and notes.read_text() == "mine"


# ---------------------------------------------------------------- export: real signals

def _start_export(out: Path, *args) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "2000"}
    return subprocess.Popen([sys.executable, "-m", "cli", "export", *map(str, args), "-o", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=out.parent)


def _wait_for(process: subprocess.Popen, folder: Path, pattern: str, timeout: float = 180) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = list(folder.glob(pattern)) if folder.is_dir() else []
        if found:
            return found[0]
        if process.poll() is not None:
            raise AssertionError(f"the export ended before {pattern} appeared:\n{process.communicate()[1][-2000:]}")
        time.sleep(0.05)
    process.kill()
    raise AssertionError(f"{pattern} did not appear in {timeout} s")


def _signalled(process: subprocess.Popen, signum: int) -> Outcome:
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=120)
    return Outcome(process.returncode, stdout + stderr)


MID_EXPORT = ".mixdeploy-export-*/model.opt.onnx"     # ONNX written, the TFLite conversion under way


def test_sigterm_mid_export_removes_everything_it_started(tmp_path):
    out = tmp_path / "new"
    process = _start_export(out, *M32)
    _wait_for(process, out, MID_EXPORT)
    result = _signalled(process, signal.SIGTERM)
    see("export-sigterm", result, 128 + signal.SIGTERM, "interrupted (SIGTERM)", tmp_path)
    assert not out.exists()


def test_sighup_mid_export_leaves_the_previous_export_as_it_was(files, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(files["export"], out)
    before = hashes(out)
    process = _start_export(out, *M32)
    _wait_for(process, out, ".mixdeploy-export-*")
    result = _signalled(process, signal.SIGHUP)
    see("export-sighup", result, 128 + signal.SIGHUP, "interrupted (SIGHUP)", tmp_path)
    assert hashes(out) == before


def test_the_export_after_a_kill_9_removes_its_leftover_with_a_note(files, tmp_path):
    out = tmp_path / "out"
    process = _start_export(out, *M32)
    _wait_for(process, out, MID_EXPORT)
    process.kill()
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL
    leftover = [p.name for p in out.glob(".mixdeploy-export-*")]
    assert leftover and (out / leftover[0] / "model.onnx").stat().st_size > 1_000_000
    result = run("export", files["tiny"], *SPLIT, "--format", "onnx", "-o", out)
    see("export-after-kill-9", result, 0, f"removed {leftover[0]}", tmp_path)
    assert hidden(out) == [] and (out / "manifest.json").is_file()


# ---------------------------------------------------------------- parity

def _parity(*args, env=None) -> Outcome:
    return run("parity", *args, "--no-progress", env=env)


def test_parity_refuses_a_report_folder_under_a_file_before_running(files, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    out = _parity(files["tiny"], "--tflite", files["fp32"], "--data", files["imgs"], "--report", notes / "r")
    see("parity-report-under-file", out, 2, "is a file, not a folder", tmp_path)
    assert "pytorch" not in out.output and "onnxruntime" not in out.output and notes.read_text() == "mine"


def test_parity_refuses_a_tflite_model_of_another_input_size(files, tmp_path):
    out = _parity(*M32[:5], "--tflite", files["fp32"], "--data", files["imgs"])
    see("parity-input-size", out, 2, "takes 16x16 images, but the preprocessing makes 32x32", files["root"])


def test_parity_refuses_an_onnx_model_of_another_input_size(files, tmp_path):
    out = _parity(*M32[:5], "--onnx", files["tiny"], "--data", files["imgs"])
    see("parity-onnx-input-size", out, 2, "takes 16x16 images", files["root"])


def test_parity_refuses_nan_data(files, tmp_path):
    images = np.random.default_rng(0).random((4, 16, 16, 3)).astype(np.float32)
    images[1, 3, 3, 1] = np.inf
    np.save(tmp_path / "nan.npy", images)
    out = _parity(files["tiny"], "--tflite", files["fp32"], "--data", tmp_path / "nan.npy")
    see("parity-nan-data", out, 2, "NaN/inf values (the first in image 1)", tmp_path)


def test_nan_outputs_fail_the_gate_whatever_the_thresholds(files, tmp_path):
    poisoned = tmp_path / "nan.tflite"
    poison_first_conv(files["fp32"], poisoned)
    out = _parity(files["tiny"], "--tflite", poisoned, "--data", files["imgs"], "--min-top1-agreement", "0",
                  "--report", tmp_path / "r")
    see("parity-nonfinite-outputs", out, 1, "output values are NaN or infinite", tmp_path)
    report = strict_json(tmp_path / "r" / "parity.json")
    assert not report["passed"]
    assert [c["threshold"] for c in report["violations"]] == ["finite_outputs"]
    assert report["backends"][0]["max_abs_error"] is None and report["backends"][0]["top1_agreement"] == 0.0


def test_parity_names_a_truncated_fashion_mnist_file(files, tmp_path):
    root = fashion_mnist_copy(tmp_path / "fm", "test")
    out = _parity(files["tiny"], "--tflite", files["fp32"], "--data", "fashion-mnist", "--limit", "4",
                  env={"MIXDEPLOY_FASHION_MNIST_DIR": str(root)})
    see("parity-truncated-fashion-mnist", out, 2, "is truncated or corrupt", tmp_path)
    assert "Aborted!" not in out.output


def test_parity_names_a_missing_image_of_a_list_file(files, tmp_path):
    png(tmp_path / "a.png")
    (tmp_path / "list.txt").write_text("a.png 0\nmissing.png 1\n")
    out = _parity(files["tiny"], "--tflite", files["fp32"], "--data", tmp_path / "list.txt")
    see("parity-list-missing-image", out, 2, "missing.png not found", tmp_path)


def test_parity_names_a_broken_image_of_a_list_file(files, tmp_path):
    png(tmp_path / "a.png")
    truncated_png(tmp_path / "broken.png")
    (tmp_path / "list.txt").write_text("a.png 0\nbroken.png 1\n")
    out = _parity(files["tiny"], "--tflite", files["fp32"], "--data", tmp_path / "list.txt")
    see("parity-list-broken-image", out, 2, "broken.png as an image", tmp_path)


def test_parity_names_a_manifest_that_is_not_json(files, tmp_path):
    shutil.copy(files["fp32"], tmp_path / "m.tflite")
    (tmp_path / "manifest.json").write_text('{"model": {"name": ')
    out = _parity(files["tiny"], "--tflite", tmp_path / "m.tflite", "--data", files["imgs"])
    see("parity-corrupt-manifest", out, 2, "is not valid JSON", tmp_path)


def test_parity_refuses_labels_of_other_classes(files, tmp_path):
    three = image_folder(tmp_path / "three_classes", classes=3)
    out = _parity(files["tiny"], "--tflite", files["fp32"], "--data", three)
    see("parity-wrong-classes", out, 2, "the data has 3 classes", tmp_path)


def test_parity_prints_a_data_path_with_brackets_literally(files, tmp_path):
    folder = image_folder(tmp_path / "[/x]imgs")
    out = _parity(files["tiny"], "--tflite", files["fp32"], "--data", folder)
    line = see("parity-markup-in-path", out, 0, "data: ", tmp_path)
    assert line.startswith(f"data: {folder} (flat folder")


def test_parity_blame_leaves_no_temporary_folder(trained_checkpoint, trained_artifacts, tmp_path):
    import tempfile

    from mixdeploy.atomic import scratch_dir

    alone = tmp_path / "alone"          # no model.opt.onnx beside it: blame exports the ONNX itself
    alone.mkdir()
    shutil.copy(trained_artifacts.tflite_int8, alone / "model_int8.tflite")
    temp_entries = lambda: sorted(p.name for p in Path(tempfile.gettempdir()).glob("mixdeploy-parity-*"))
    before = temp_entries()
    out = _parity(trained_checkpoint, "--tflite", alone / "model_int8.tflite", "--data", "fashion-mnist",
                  "--limit", "50", "--min-sqnr-db", "100", "--blame-images", "4", "--calibration-count", "8",
                  "--report", tmp_path / "r")
    see("parity-blame-temp", out, 1, "parity: FAIL", tmp_path)
    blame = strict_json(tmp_path / "r" / "blame.json")
    assert blame["layers"] and blame["onnx"].endswith("(not kept)")
    assert temp_entries() == before and not list(scratch_dir().iterdir())


# ---------------------------------------------------------------- bench

def test_bench_refuses_a_plot_under_a_file_before_running(files, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    out = run("bench", files["fp32"], "--plot", notes / "x.png")
    see("bench-plot-under-file", out, 2, "is a file, not a folder", tmp_path)
    assert "benchmarking" not in out.output and notes.read_text() == "mine"


def test_bench_refuses_a_plot_format_matplotlib_cannot_write(files, tmp_path):
    out = run("bench", files["fp32"], "--plot", tmp_path / "x.txt")
    see("bench-plot-format", out, 2, "cannot write .txt files", tmp_path)
    assert "benchmarking" not in out.output and not list(tmp_path.iterdir())


def test_bench_refuses_a_plot_without_macs_before_running(files, tmp_path):
    shutil.copy(files["fp32"], tmp_path / "alone.tflite")
    out = run("bench", tmp_path / "alone.tflite", "--plot", tmp_path / "x.png")
    see("bench-plot-no-macs", out, 2, "no MACs are known", tmp_path)
    assert "benchmarking" not in out.output and not (tmp_path / "x.png").exists()


def test_bench_names_a_truncated_model(files, tmp_path):
    out = run("bench", cut(files["fp32"], tmp_path / "cut.tflite"), "--runs", "2", "--threads", "1")
    see("bench-truncated", out, 2, "is not a valid TFLite model", tmp_path)


def test_bench_refuses_zero_threads(files, tmp_path):
    out = run("bench", files["fp32"], "--threads", "0")
    see("bench-threads", out, 2, "thread counts", tmp_path)


def test_bench_prints_a_path_with_brackets_literally(files, tmp_path):
    folder = tmp_path / "[/x]m"
    shutil.copytree(files["export"], folder)
    out = run("bench", folder / "model_fp32.tflite", "--runs", "2", "--warmup", "0", "--threads", "1")
    line = see("bench-markup-in-path", out, 0, "benchmarking", tmp_path)
    assert str(folder / "model_fp32.tflite") in line


# ---------------------------------------------------------------- inspect, flops, models

def test_inspect_names_a_truncated_model(files, tmp_path):
    out = run("inspect", cut(files["fp32"], tmp_path / "cut.tflite"))
    see("inspect-truncated", out, 2, "truncated or corrupt TFLite file", tmp_path)


def test_inspect_names_an_empty_file(tmp_path):
    (tmp_path / "empty.tflite").write_bytes(b"")
    out = run("inspect", tmp_path / "empty.tflite")
    see("inspect-empty", out, 2, "is not a TFLite model", tmp_path)


def test_inspect_refuses_a_folder(files, tmp_path):
    out = run("inspect", files["export"])
    see("inspect-folder", out, 2, "is a directory", files["root"])


def test_inspect_prints_a_path_with_brackets_literally(files, tmp_path):
    target = tmp_path / "[/x]" / "[bold]m.tflite"        # a closing tag (a crash) and a style (eaten)
    target.parent.mkdir(parents=True)
    shutil.copy(files["fp32"], target)
    out = run("inspect", target)
    line = see("inspect-markup-in-path", out, 0, "[bold]m.tflite", tmp_path)
    assert line.startswith(str(target))


def test_flops_refuses_a_checkpoint_with_a_nan_weight(files, tmp_path):
    out = run("flops", files["nan_pt"])
    see("flops-nan-weights", out, 2, "conv_stem.weight (1 of 432 values)", files["root"])


def test_flops_names_a_truncated_onnx_file(files, tmp_path):
    out = run("flops", cut(files["tiny"], tmp_path / "cut.onnx"))
    see("flops-truncated-onnx", out, 2, "is not a readable ONNX model", tmp_path)


def test_flops_prints_a_path_with_brackets_literally(files, tmp_path):
    target = tmp_path / "[/x]" / "[bold]net.onnx"
    target.parent.mkdir(parents=True)
    shutil.copy(files["tiny"], target)
    out = run("flops", target)
    line = see("flops-markup-in-path", out, 0, "[bold]net.onnx", tmp_path)
    assert line.startswith(f"{target} at 16x16")


def test_models_exits_quietly_when_its_reader_goes_away(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, "-m", "cli", "models", "--json"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=env, cwd=tmp_path)
    process.stdout.close()                       # like `| head -0`: nobody reads the output
    stderr = process.stderr.read().decode()
    outcome = Outcome(process.wait(timeout=120), stderr)
    assert stderr.strip() == ""
    see("models-broken-pipe", Outcome(outcome.exit_code, "(nothing)"), 1, "(nothing)", tmp_path)


def test_an_unknown_command_is_named(tmp_path):
    out = run("model")
    see("models-typo", out, 2, "No such command", tmp_path)


# ---------------------------------------------------------------- report, and every command

def test_report_refuses_an_output_under_a_file(files, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    out = run("report", files["export"], "-o", notes / "r.html", "--no-progress")
    see("report-out-under-file", out, 2, "is a file, not a folder", tmp_path)
    assert notes.read_text() == "mine"


def test_report_refuses_a_read_only_output(files, tmp_path):
    with tmpfs(tmp_path / "ro", read_only=True) as ro:
        out = run("report", files["export"], "-o", ro / "r.html", "--no-progress")
        see("report-out-read-only", out, 2, "read-only file system", tmp_path)
        assert not list(ro.iterdir())


def test_report_prints_a_path_with_brackets_literally(files, tmp_path):
    target = tmp_path / "[/x]" / "[bold]r.html"
    out = run("report", files["export"], "-o", target, "--no-progress")
    line = see("report-markup-in-path", out, 0, "report written to", tmp_path)
    assert str(target) in line and target.is_file()


def test_debug_shows_the_traceback_behind_the_message(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    out = run("--debug", "export", *M32, "-o", notes / "sub")
    see("debug-flag", out, 2, "is a file, not a folder", tmp_path, traceback_expected=True)
    assert "Traceback (most recent call last)" in out.output and "check_output_dir" in out.output


@pytest.mark.parametrize("code, gist", [
    (errno.ENOSPC, "no space left"), (errno.EROFS, "read-only file system"), (errno.ENAMETOOLONG, "too long"),
    (errno.EACCES, "permission denied"), (errno.EPERM, "not permitted"), (errno.ENOTDIR, "is a file, not a folder"),
    (errno.EEXIST, "already exists"), (errno.EIO, "input/output error"), (errno.EDQUOT, "quota"),
])
def test_every_os_error_becomes_a_message_that_says_what_to_do(code, gist):
    """The messages of the errors a test here cannot cause as root (EACCES, EIO...)."""
    from mixdeploy.errors import os_error_message

    message = os_error_message(OSError(code, os.strerror(code), "/data/out/model.onnx"))
    assert gist in message and "/data/out/model.onnx" in message


def test_an_os_error_in_any_command_is_a_message_not_a_traceback(monkeypatch, tmp_path):
    """One handler for every command: EACCES raised deep in `models` (not reproducible as root)."""
    from mixdeploy.models import sources

    def denied():
        raise PermissionError(errno.EACCES, "Permission denied", "/opt/weights")
    monkeypatch.setattr(sources, "bundled_checkpoints", denied)
    out = run("models")
    assert out.exit_code == 2 and "Traceback" not in out.output
    assert "Error: permission denied: /opt/weights" in out.output


def test_a_scratch_folder_of_a_killed_process_is_removed_by_the_next_one(tmp_path, monkeypatch):
    """kill -9 skips atexit: the next process asking for its scratch folder removes the orphan
    (its pid is gone), and leaves a live process's folder alone."""
    import tempfile

    from mixdeploy import atomic

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(atomic, "_scratch", None)
    code = "from mixdeploy.atomic import scratch_dir; print(scratch_dir(), flush=True); import time; time.sleep(60)"
    victim = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(tmp_path)})
    orphan = Path(victim.stdout.readline().strip())
    (orphan / "model.onnx").write_bytes(b"x" * 1000)
    alive = tmp_path / f"{atomic.SCRATCH_PREFIX}{os.getppid()}-live"     # pytest's parent: alive
    alive.mkdir()
    victim.kill()
    victim.wait(timeout=30)
    assert orphan.is_dir()                                  # no atexit ran
    mine = atomic.scratch_dir()
    assert not orphan.exists() and alive.is_dir() and mine.parent == tmp_path
    shutil.rmtree(mine)

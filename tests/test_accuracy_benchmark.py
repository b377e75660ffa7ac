"""benchmarks/accuracy.py's results file: a run replaces the checkpoints (and techniques) it ran and
keeps the rest."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import accuracy  # noqa: E402


def summary(agreement: float) -> dict:
    cell = {"mean": agreement, "min": agreement, "max": agreement}
    return {"draws": 3, "top1_agreement": cell, "top1": cell, "top1_drop_points": {"mean": 0.1, "min": 0.0, "max": 0.2},
            "mean_cosine": {"mean": 0.99, "min": 0.98, "max": 0.995}}


def entry(name: str, agreement: float, images: int = 2000, technique: str = "default", weights: str = "w1") -> dict:
    return {"checkpoint": name, "model": "mixnet-m", "weights_sha256": weights, "images": images, "draws": 3,
            "reference_top1": 0.9,
            "rows": [{"technique": technique, "calibration_images": 64, "summary": summary(agreement)}]}


def test_a_run_replaces_its_checkpoints_and_keeps_the_others():
    # a file written before entries carried their own counts: images/draws on top
    old_s = {k: v for k, v in entry("s.pt", 0.98).items() if k not in ("images", "draws")}
    previous = {"images": 1000, "draws": 2, "checkpoints": [old_s, entry("m.pt", 0.97)]}
    document = accuracy.merged(previous, [entry("m.pt", 0.99), entry("tfm.pt", 0.96)])
    names = [e["checkpoint"] for e in document["checkpoints"]]
    assert names == ["s.pt", "m.pt", "tfm.pt"]                       # order first measured, no duplicate
    by_name = {e["checkpoint"]: e for e in document["checkpoints"]}
    assert by_name["m.pt"]["rows"][0]["summary"]["top1_agreement"]["mean"] == 0.99   # the new run wins
    assert (by_name["s.pt"]["images"], by_name["s.pt"]["draws"]) == (1000, 2)        # old counts kept per entry

    text = accuracy.render(document, Path("/nonexistent/peers.json"))
    assert "## s.pt (mixnet-m, fp32 top-1 90.00%, 1000 test images, 2 draws)" in text
    assert "| default | 64 | 3 | 99.00 (99.00 to 99.00) |" in text and "| default | 64 | 3 | 96.00" in text
    assert text.count("## ") == 3


def test_a_run_on_the_same_images_keeps_the_techniques_it_did_not_run():
    old = {**entry("s.pt", 0.98), "latency_ms": {"default": {"1": 3.0}}}
    old["rows"] = old["rows"] + entry("s.pt", 0.95, technique="minmax")["rows"]   # default first, then minmax
    new = entry("s.pt", 0.99)                                     # default and avgminmax run now, no latency
    new["rows"] = new["rows"] + entry("s.pt", 0.97, technique="avgminmax")["rows"]
    kept = accuracy.merged({"checkpoints": [old]}, [new])["checkpoints"][0]
    by_technique = {r["technique"]: r["summary"]["top1_agreement"]["mean"] for r in kept["rows"]}
    assert by_technique == {"avgminmax": 0.97, "minmax": 0.95, "default": 0.99}   # default replaced, minmax kept
    assert list(by_technique) == ["avgminmax", "minmax", "default"]  # in TECHNIQUES' order, not run order
    assert "latency_ms" not in kept                               # default ran again: the old timing is stale
    minmax_only = entry("s.pt", 0.96, technique="minmax")
    assert accuracy.merged({"checkpoints": [old]}, [minmax_only])["checkpoints"][0]["latency_ms"] == \
        {"default": {"1": 3.0}}                                   # neither timed model ran again: it stays
    # on other images the old rows measured something else: the entry is replaced whole
    fewer = accuracy.merged({"checkpoints": [old]}, [entry("s.pt", 0.99, images=500)])["checkpoints"][0]
    assert [r["technique"] for r in fewer["rows"]] == ["default"] and "latency_ms" not in fewer


def test_the_int16x8_row_follows_the_int8_techniques_and_its_timing_is_rendered():
    old = entry("s.pt", 0.98)
    new = entry("s.pt", 0.996, technique="int16x8")                 # only int16x8 run now
    kept = accuracy.merged({"checkpoints": [{**old, "latency_ms": {"default": {"1": 3.0}}}]}, [new])["checkpoints"][0]
    assert [r["technique"] for r in kept["rows"]] == ["default", "int16x8"]
    assert "latency_ms" not in kept                                 # int16x8 is one of the timed models
    timed = {**kept, "latency_ms": {"default": {"1": 3.0}, "avgminmax": {"1": 2.0}, "int16x8": {"1": 60.0}},
             "latency_ratio_default_vs_first_release": {"1": 1.5},
             "latency_ratio_int16x8_vs_default": {"1": 20.0}}
    text = accuracy.render({"checkpoints": [timed]}, Path("/nonexistent/peers.json"))
    assert "default 3.00 vs first release 2.00 (x1.50); int16x8 60.00 ms at 1 thread(s) (x20.0 of default)" in text
    assert "| int16x8 | 64 | 3 | 99.60 (99.60 to 99.60) |" in text


def test_a_retrained_checkpoint_keeps_neither_old_rows_nor_peer_rows_of_the_old_weights(tmp_path):
    # the same file name with new weights (a longer training): every old number describes another model
    old = {**entry("m.pt", 0.97, weights="old"), "latency_ms": {"default": {"1": 3.0}}}
    old["rows"] = old["rows"] + entry("m.pt", 0.95, technique="minmax", weights="old")["rows"]
    new = entry("m.pt", 0.99, weights="new")
    kept = accuracy.merged({"checkpoints": [old]}, [new])["checkpoints"][0]
    assert [r["technique"] for r in kept["rows"]] == ["default"] and "latency_ms" not in kept

    peers = tmp_path / "peers.json"
    peer_entry = {"checkpoint": "m.pt", "images": 2000, "rows": [],
                  "summary": {"litert-torch": summary(0.96)}}
    peers.write_text(json.dumps({"m.pt": {**peer_entry, "weights_sha256": "old"}}))
    assert "peer: litert-torch" not in accuracy.render({"checkpoints": [kept]}, peers)
    peers.write_text(json.dumps({"m.pt": {**peer_entry, "weights_sha256": "new"}}))
    assert "| peer: litert-torch | 64 | 3 | 96.00" in accuracy.render({"checkpoints": [kept]}, peers)

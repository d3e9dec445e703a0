"""`sd-bridge sweep` on the toy world, offline: sweep.json, the grid, the HTML page in Chromium, breadth that
tells a pinned prompt from an open one, and eval's breadth ratio."""

from __future__ import annotations

import json

import pytest

from conftest import launch_chromium

PINNED = "a large yellow dotted square on the right on a black background"  # every attribute said (target dialect)
OPEN = "a shape"  # shape, colour, size, position, fill and background left to the model


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An index of ground-truth drawings of three scenes (two seeds each), embedded with toy-clip."""
    from bridge.commands.index import IndexConfig, run_index
    from toyworld import world as w

    root = tmp_path_factory.mktemp("reference")
    (root / "images").mkdir()
    for i, scene in enumerate([w.Scene(shape="circle", colour="red"), w.Scene(shape="square", colour="blue"),
                               w.Scene(shape="triangle", colour="yellow", background="black")]):
        for k in range(2):
            w.draw(scene, 100 + k).save(root / "images" / f"scene{i}-{k}.png")
    run_index(IndexConfig(reference=str(root / "images"), out=root / "index", scorer="toy-clip", device="cpu"),
              log=lambda *_: None)
    return root / "index"


def test_sweep_writes_rows_grid_and_a_page_that_loads_in_chromium(tmp_path, reference, capsys):
    from PIL import Image
    from playwright.sync_api import sync_playwright

    from bridge.cli import main

    out = tmp_path / "sweep"
    assert main(["sweep", "a crimson circle", "--seed-list", "1", "2", "3", "--rows", "source", "identity",
                 "translation", "oracle", "--reference", str(reference), "--out", str(out), "--device", "cpu"]) == 0
    # A bar per row that renders, with counts and an ETA (a sweep ran 207 s without a word, issue #43).
    bars = capsys.readouterr().err
    assert "prompt 1 source (toy-sd15): 100%" in bars and "3/3" in bars and "render/s" in bars
    report = json.loads((out / "sweep.json").read_text())
    assert [(r["strategy"], r["model"]) for r in report["rows"]] == [
        ("source", "toy-sd15"), ("identity", "toy-sd2"), ("translation", "toy-sd2"), ("oracle", "toy-sd2")]
    for row in report["rows"]:
        assert row["seeds"] == [1, 2, 3] and row["breadth"]["seeds"] == 3
        assert row["breadth"]["ci95"][0] <= row["breadth"]["mean_distance"] <= row["breadth"]["ci95"][1]
        assert len(row["nearest"]) == 3 and len(row["nearest"][0]) == 3  # top-3 per render
        assert row["nearest"][0][0]["similarity"] >= row["nearest"][0][1]["similarity"]
        assert 0 <= row["duplicates"]["duplicates"] <= 3
        assert all((out / f).is_file() for f in row["files"])
    assert report["rows"][3]["text"] == "a red circle on a white background"  # the oracle's translation
    assert report["rows"][1]["breadth_ratio"] is not None and "breadth_ratio" not in report["rows"][0]
    grid = Image.open(out / report["grids"][0])
    assert grid.height == 4 * (96 + 42) and grid.width > 3 * 2 * 96  # 4 rows; 3 seeds, each beside its reference
    assert (out / "config.json").is_file()
    # The page: every render and nearest reference loads in a real browser.
    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page()
        page.goto((out / "index.html").as_uri())
        images = page.evaluate("[...document.images].map(i => i.complete && i.naturalWidth > 0)")
        browser.close()
    assert len(images) == 4 * 3 * 2 and all(images)
    # A rerun renders nothing (every image comes from the render cache).
    mtime = (out / "render-cache").stat().st_mtime_ns
    capsys.readouterr()
    assert main(["sweep", "a crimson circle", "--seed-list", "1", "2", "3", "--rows", "source", "--out", str(out),
                 "--json"]) == 0
    summary, bars = capsys.readouterr()
    summary = json.loads(summary)
    assert "render/s" not in bars  # nothing rendered, no bar
    assert summary["rows"][0]["breadth"]["mean_distance"] == pytest.approx(report["rows"][0]["breadth"]["mean_distance"])
    assert (out / "render-cache").stat().st_mtime_ns == mtime


def test_sweep_over_a_prompt_file_and_bad_input(tmp_path, reference, capsys):
    from bridge.cli import main

    (tmp_path / "p.txt").write_text("a crimson circle\na small green square\n")
    assert main(["sweep", "--prompts", str(tmp_path / "p.txt"), "--seeds", "2", "--rows", "identity",
                 "--out", str(tmp_path / "s")]) == 0
    report = json.loads((tmp_path / "s" / "sweep.json").read_text())
    assert report["grids"] == ["grid-000.png", "grid-001.png"] and [r["prompt_index"] for r in report["rows"]] == [0, 1]
    for argv, message in ((["x", "--rows", "everything"], "unknown row 'everything'"),
                          (["x", "--seed-list", "1", "1"], "repeats a seed"),
                          (["--out", str(tmp_path / "z")], "give one PROMPT or --prompts FILE"),
                          (["x", "--reference", str(tmp_path)], "is not a reference index"),
                          # Issue #41: bounds on the work one sweep may ask for, each named in its error.
                          (["x", "--seeds", "1000000"], "over the limit of 256 per prompt"),
                          (["x", "--cell", "60000"], "cell must be 16 to 1024 pixels"),
                          (["x", "--seeds", "256", "--cell", "1024"], "Mpx, over the limit of 64 Mpx"),
                          (["x" * 180_000], "the limit is 20,000 (--max-chars)")):
        with pytest.raises(SystemExit):
            main(["sweep", *argv] + ([] if "--out" in argv else ["--out", str(tmp_path / "z")]))
        assert message in capsys.readouterr().err
    (tmp_path / "long.txt").write_text("a crimson circle\n" + "masterpiece, " * 14_000 + "\n")
    assert main(["sweep", "--prompts", str(tmp_path / "long.txt"), "--out", str(tmp_path / "l")]) == 2
    assert "prompt 2 has 181,999 characters; the limit is 20,000" in capsys.readouterr().err
    assert not (tmp_path / "l" / "sweep.json").exists()
    assert main(["sweep", "a red fox", "--rows", "oracle", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "oracle row needs toy-world prompts: 'red' is not a word" in err[0]
    assert main(["sweep", "a crimson circle", "--rows", "source", "--scorer", "tiny-clip", "--reference",
                 str(reference), "--out", str(tmp_path / "t")]) == 2
    assert "embedded with scorer 'toy-clip', not 'tiny-clip'" in capsys.readouterr().err


def test_breadth_tells_a_pinned_prompt_from_an_open_one(tmp_path):
    """Issue #14's acceptance on the toy world, one pair: non-overlapping intervals over 16 seeds. It fails on a
    broken breadth (checked: distances of the first seed's embedding repeated, or a constant distance).
    On toy-sd2 (the identity row): where a caption leaves everything open, toy-sd2 draws any shape, solid or
    hollow. toy-sd15 separates the two kinds over 8 pairs x 24 seeds (benchmarks/sweep_breadth.py), but for
    "a shape" it leaves only the shape open, so this one pair at 16 seeds is disjoint there only barely
    (benchmarks/sweep_breadth.py measures it)."""
    from bridge.commands.sweep import SweepConfig, run_sweep

    (tmp_path / "p.txt").write_text(f"{PINNED}\n{OPEN}\n")
    report = run_sweep(SweepConfig(prompts=str(tmp_path / "p.txt"), rows=["identity"], seeds=16, out=tmp_path / "s",
                                   device="cpu"), log=lambda *_: None)
    pinned, open_ = (r["breadth"] for r in report["rows"])
    assert pinned["ci95"][1] < open_["ci95"][0]
    assert open_["mean_distance"] > 2 * pinned["mean_distance"]
    assert pinned["clusters"] < open_["clusters"]


def test_eval_reports_the_breadth_ratio_and_catches_a_translation_that_collapses_it(tmp_path):
    """Prompts that leave the shape open (the source draws all three): a translation that names one shape
    makes the target draw one, and eval's breadth ratio falls below 0.7 of identity's, with its interval's upper
    end below identity's ratio."""
    from eval.config import EvalConfig
    from eval.run import run_eval

    prompts = ["a shape", "a small shape", "a shape on the left", "a shape on a beige background", "a big shape",
               "a shape at the top"]
    (tmp_path / "p.txt").write_text("\n".join(prompts) + "\n")
    with (tmp_path / "t.jsonl").open("w") as fh:
        for p in prompts:
            fh.write(json.dumps({"prompt": p, "translated_prompt": "a large red striped circle on a white background"})
                     + "\n")
    report = run_eval(EvalConfig(prompts=str(tmp_path / "p.txt"), out=tmp_path / "r", translations=tmp_path / "t.jsonl",
                                 no_syntax=True, seeds=8, device="cpu", progress=False), log=lambda *_: None)
    s = report["strategies"]
    assert s["file:t"]["breadth_ratio"] < 0.7 * s["identity"]["breadth_ratio"]
    assert s["file:t"]["breadth_ratio_ci95"][1] < s["identity"]["breadth_ratio"]
    assert "breadth ratio" in (tmp_path / "r" / "report.md").read_text()


def test_compare_tab_shows_breadth_and_each_rows_nearest_reference(reference):
    from app import Models, ServeConfig, compare_fn

    grid, _, summary, _, details = compare_fn(Models(ServeConfig(reference=reference, max_seeds=4)),
                                              "a crimson circle", "", "1, 2, 3", 3, 0)
    near = [row["nearest_reference"] for row in details["rows"]]
    assert len(near) == 4 and all(n["path"].startswith("scene") and 0 < n["similarity"] <= 1 for n in near)
    assert all(0 <= n["duplicates"] <= n["renders"] == 3 for n in near)
    # The grid: a label column, then 3 seeds and the nearest reference per row (cells of 96 px for 32 px renders).
    assert grid.width == 170 + 4 * (96 + 4) and grid.height == 22 + 4 * (96 + 18 + 4)
    assert "breadth (mean pairwise scorer distance across seeds" in summary
    assert "toy-sd15 with the source prompt" in summary.split("breadth")[1] and ", ratio " in summary


def test_serve_refuses_an_index_of_another_scorer_at_start(reference):
    from app import ServeConfig, build_app

    with pytest.raises(ValueError, match="embedded with scorer 'toy-clip', not 'tiny-clip'"):
        build_app(ServeConfig(reference=reference, scorer="tiny-clip"))

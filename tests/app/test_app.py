"""The Gradio app: each tab's API through gradio_client, and a real browser (Debian's Chromium) session."""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import free_port, launch_chromium


SCREENSHOTS = os.environ.get("SD_BRIDGE_SCREENSHOTS")  # a directory: keep each browser test's screenshot


@pytest.fixture(scope="module")
def server():
    from bridge.commands.serve import ServeConfig, run_serve

    cfg = ServeConfig(port=free_port(), max_seeds=8, adapter=[Path("none")])  # the syntax strategy only
    demo = run_serve(cfg, log=lambda *_: None, block=False)
    yield f"http://127.0.0.1:{cfg.port}/"
    demo.close()


@pytest.fixture(scope="module")
def client(server):
    from gradio_client import Client

    return Client(server, verbose=False)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = launch_chromium(p)
        yield chromium
        chromium.close()


def screenshot(page, tmp_path, name: str) -> Path:
    shot = tmp_path / f"{name}.png"
    page.screenshot(path=str(shot), full_page=True)
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(SCREENSHOTS) / shot.name)
    assert shot.stat().st_size > 10_000
    return shot


def test_app_binds_localhost_only_and_loads_no_model_at_import():
    import subprocess
    import sys

    code = "import sys, app; print('diffusers' in sys.modules, 'peft' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split() \
        == ["False", "False"]
    from app import ServeConfig

    assert ServeConfig().host == "127.0.0.1"


def test_a_port_in_use_is_one_line_naming_the_flag(capsys):
    from bridge.cli import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert main(["serve", "--port", str(taken.getsockname()[1])]) == 2
    out, err = capsys.readouterr()
    assert out == ""  # no URL printed for a server that never ran
    assert len(err.splitlines()) == 1 and "is in use" in err and "--port" in err


def test_translate_tab(client):
    prompt, negative, diff, neg_diff, warnings, tokens = client.predict(
        prompt="(masterpiece:1.2), a cat <lora:x:1>", negative_prompt="EasyNegative, ugly", api_name="/translate")
    assert prompt == "(masterpiece:1.2), a cat" and negative == "ugly"
    assert {"token": "<lora:x:1> ", "class_or_confidence": "removed"} in diff
    assert {"token": "EasyNegative, ", "class_or_confidence": "removed"} in neg_diff
    assert "network-dropped" in warnings and "embedding-dropped" in warnings
    assert "[4] -> [4]" in tokens
    # It says plainly which strategy ran: no adapter, no rewording (issue #43).
    assert "**Strategy:** syntax migration: weights, tags and structure, no rewording" in tokens
    # The policy controls reach the translator.
    prompt, *_ = client.predict(prompt="a cat <lora:x:1>", networks="keep", api_name="/translate")
    assert prompt == "a cat <lora:x:1>"
    with pytest.raises(Exception, match="unknown adapter|not in the list of choices"):
        client.predict(prompt="a cat", adapter="../../etc", api_name="/translate")
    with pytest.raises(Exception, match="limit is 20,000"):
        client.predict(prompt="x" * 20_001, api_name="/translate")


def test_the_header_says_which_strategy_runs(tmp_path):
    from app import Models, ServeConfig, header

    text = header(Models(ServeConfig(adapter=[Path("none")])))
    assert "What runs here: syntax migration: weights, tags and structure, no rewording" in text
    assert "no word of a prompt is changed" in text and "draws what" not in text
    adapter = tmp_path / "toy-bridge"
    adapter.mkdir()
    text = header(Models(ServeConfig(adapter=[adapter])))
    assert "What runs here: learned rewriting by adapter `toy-bridge`" in text


def test_with_no_adapter_named_a_toy_compare_offers_the_shipped_toy_adapter():
    """#39 item 8: a person sees a learned translation without training first."""
    from app import Models, ServeConfig, header, translate_fn

    models = Models(ServeConfig())
    assert models.compare_presets()[1].name == "toy-sd2"  # no GPU here: Compare runs the toy world
    assert models.default_adapter() == "toy-adapter" and "learned rewriting by adapter `toy-adapter`" in header(models)
    translated, *_ = translate_fn(models, "a cherry circle on a black background", "")
    assert translated == "a red circle on a black background"  # a class member no training prompt says
    assert Models(ServeConfig(adapter=[Path("toy")])).default_adapter() == "toy-adapter"  # by its name


def test_api_parameters_have_names(client):
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    names = {ep: [p["parameter_name"] for p in api[ep]["parameters"]] for ep in ("/translate", "/compare", "/batch")}
    assert names == {"/translate": ["prompt", "negative_prompt", "adapter", "networks", "embeddings", "syntax",
                                     "to_syntax", "faithfulness"],
                     "/compare": ["prompt", "negative_prompt", "seeds", "count", "base_seed"],
                     "/batch": ["library", "prompt_column", "negative_column"]}


def test_compare_tab_renders_a_grid_over_seeds(client):
    from PIL import Image

    # No GPU and no SD weights here: Compare renders with the toy world, and says so.
    grid, translation, summary, note, details = client.predict("a crimson circle", "", "", 2, 0, api_name="/compare")
    rows = details["rows"]
    assert [(r["model"], r["prompt"]) for r in rows] == [
        ("toy-sd15", "source prompt"), ("toy-sd2", "source prompt"), ("toy-sd2", "translation"), ("toy-sd2", "oracle")]
    assert rows[0]["agreement"] is None and all(len(r["agreement"]) == 2 for r in rows[1:])
    assert all(len(str(s)) >= 17 for s in details["seeds"])  # derived seeds, whole in the details
    # 4 rows x 2 seeds of 32 px renders in 96 px cells beside a label column: not blown up to 600 px each.
    image = Image.open(grid)
    assert image.size == (170 + 2 * (96 + 4), 22 + 4 * (96 + 18 + 4))
    assert translation == "a crimson circle"
    assert "mean agreement" in summary and "toy-sd2 with the translation" in summary
    assert "breadth (mean pairwise scorer distance across seeds, 95% CI; ratio to the source)" in summary
    assert "oracle translation is 'a red circle on a white background'" in summary
    assert "negative: 'a red outlined circle on a white background'" in summary
    assert "toy world" in note and "outside the toy world" not in note
    # Explicit seeds, as a user enters the seed of their own image; a prompt outside the toy grammar: no oracle,
    # and a note beside the pictures that they say nothing about it.
    grid, translation, summary, note, details = client.predict("a red fox, <lora:x:1>", "", "1234, 99", 1, 0,
                                                               api_name="/compare")
    assert len(details["rows"]) == 3 and translation == "a red fox" and "oracle" not in summary
    assert details["seeds"] == [1234, 99]
    assert "outside the toy world" in note and summary.startswith("**This prompt is outside the toy world.**")
    assert Image.open(grid).height > 22 + 3 * (96 + 18 + 4)  # a banner over the grid says it too
    with pytest.raises(Exception, match="between 1 and 8 seeds"):
        client.predict("a fox", "", ", ".join(map(str, range(9))), 1, 0, api_name="/compare")
    with pytest.raises(Exception, match="whole numbers"):
        client.predict("a fox", "", "12, lucky", 1, 0, api_name="/compare")


def test_seed_labels_are_short_and_cells_fit_the_render():
    from app import render_cell, short_seed

    assert short_seed(1234) == "1234" and short_seed(3038400473985123456) == "30384…"
    assert (render_cell(32), render_cell(64), render_cell(512), render_cell(768)) == (96, 128, 256, 256)


def test_batch_tab(client, tmp_path):
    from gradio_client import handle_file

    lib = tmp_path / "lib.jsonl"
    lib.write_text('{"prompt": "a <lora:x:1> cat", "id": 1}\n{"nope": 1}\n', encoding="utf-8")
    migrated, errors, first_rows, summary = client.predict(handle_file(str(lib)), "prompt", "", api_name="/batch")
    rows = [json.loads(x) for x in open(migrated, encoding="utf-8").read().splitlines()]
    assert rows == [dict(rows[0], prompt="a <lora:x:1> cat", id=1, translated_prompt="a cat")]
    assert "no key 'prompt'" in open(errors, encoding="utf-8").read()
    assert first_rows["data"][0] == ["a <lora:x:1> cat", "a cat"]
    assert "1/2 rows" in summary and "/tmp" not in summary  # no server paths
    with pytest.raises(Exception, match="no column 'prompt'"):  # an API client still gets an error as an error
        bad = tmp_path / "lib.csv"
        bad.write_text("text\na cat\n", encoding="utf-8")
        client.predict(handle_file(str(bad)), "prompt", "", api_name="/batch")


@pytest.mark.parametrize("name, text, columns, picked", [
    ("lib.csv", "id,text,neg prompt\n1,a cat,blurry\n", ["id", "text", "neg prompt"], ("text", "neg prompt")),
    ("lib.csv", "prompt,negative_prompt\na,b\n", ["prompt", "negative_prompt"], ("prompt", "negative_prompt")),
    ("lib.tsv", "caption\tseed\na cat\t1\n", ["caption", "seed"], ("caption", "")),
    ("lib.jsonl", '{"text": "a cat", "negative": "x"}\n', ["text", "negative"], ("text", "negative")),
    ("lib.txt", "a cat\n", [], ("prompt", "")),
    ("lib.jsonl", "{broken\n", [], ("prompt", "")),
])
def test_batch_columns_come_from_the_uploaded_header(tmp_path, name, text, columns, picked):
    from app import columns_fn, library_columns

    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    assert library_columns(path) == columns
    prompt, negative = columns_fn(str(path))
    assert (prompt.value, negative.value) == picked
    assert prompt.choices[0][0] == (columns[0] if columns else "prompt")


def test_batch_work_files_are_removed_at_exit(tmp_path):
    """Each upload's migrated copy lived in a temp directory that nothing removed (60 MB per 10 MB upload)."""
    import subprocess
    import sys

    lib = tmp_path / "lib.txt"
    lib.write_text("a cat <lora:x:1>\n", encoding="utf-8")
    code = ("import sys, app; m = app.Models(app.ServeConfig(adapter=['none'])); out, *_ = app.batch_fn(m, sys.argv[1], 'prompt', ''); "
            "print(m.batch_root); assert open(out).read() == 'a cat\\n'")
    proc = subprocess.run([sys.executable, "-c", code, str(lib)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    root = Path(proc.stdout.split()[-1])
    assert root.name.startswith("sd-bridge-batch-") and not root.exists()


def test_browser_counts_tokens_while_typing_and_translates(server, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1280, "height": 1400})
    page.goto(server, wait_until="networkidle")
    assert "What runs here: syntax migration" in page.locator("#header").inner_text()
    count = page.locator("#token-count")
    assert "0 / 75" in count.inner_text()
    page.locator("#prompt textarea").press_sequentially("(masterpiece:1.2), a lighthouse at dusk, <lora:add_detail:0.7>")
    page.wait_for_function("document.querySelector('#token-count').innerText.includes('7 / 75')", timeout=30_000)
    assert page.locator("#translated textarea").input_value() == ""  # counted before any click
    page.locator("#translate-btn").click()
    page.wait_for_function("document.querySelector('#translated textarea').value.length > 0", timeout=60_000)
    assert page.locator("#translated textarea").input_value() == "(masterpiece:1.2), a lighthouse at dusk"
    assert page.locator("#translated button[aria-label*='opy'], #translated button[title*='opy']").count() >= 1
    assert "Strategy: syntax migration: weights, tags and structure, no rewording" in page.locator("#strategy").inner_text()
    screenshot(page, tmp_path, "translate")
    # Compare picks up the prompt being worked on.
    page.get_by_role("tab", name="Compare").click()
    assert page.locator("#c-prompt textarea").input_value() == \
        "(masterpiece:1.2), a lighthouse at dusk, <lora:add_detail:0.7>"
    page.close()


def test_browser_compare_reads_at_a_glance(server, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(server, wait_until="networkidle")
    page.get_by_role("tab", name="Compare").click()
    assert "toy world" in page.locator("#compare-note").inner_text()  # the note shows before any render
    page.locator("#c-prompt textarea").fill("a crimson circle")
    page.locator("#c-seeds textarea, #c-seeds input").first.fill("1, 2, 3, 4, 5, 6, 7, 8")
    page.locator("#compare-btn").click()
    # While it renders, a progress bar counts the renders (the tab showed only a spinner for 50-80 s).
    page.wait_for_function("document.body.innerText.match(/\\d+\\/32 renders/)", timeout=120_000)
    page.wait_for_function("(() => { const i = document.querySelector('#c-grid img'); "
                           "return i && i.complete && i.naturalWidth > 0; })()", timeout=180_000)
    grid = page.locator("#c-grid img")
    natural = page.evaluate("[document.querySelector('#c-grid img').naturalWidth, "
                            "document.querySelector('#c-grid img').naturalHeight]")
    assert natural == [170 + 8 * (96 + 4), 22 + 4 * (96 + 18 + 4)]  # 8 seeds x 4 labelled rows
    box = grid.bounding_box()
    assert abs(box["width"] - natural[0]) <= 2 and box["x"] + box["width"] <= 1400  # shown at its size, on screen
    screenshot(page, tmp_path, "compare")
    # Two seeds: the grid stays small, each 32 px render in a 96 px cell (it was blown up to ~600 px).
    page.locator("#c-seeds textarea, #c-seeds input").first.fill("1, 2")
    page.locator("#compare-btn").click()
    page.wait_for_function("document.querySelector('#c-grid img') && "
                           "document.querySelector('#c-grid img').naturalWidth === 370", timeout=180_000)
    assert grid.bounding_box()["width"] <= 372
    # A prompt outside the toy world gets a note beside its pictures.
    page.locator("#c-prompt textarea").fill("a lighthouse at dusk, highly detailed")
    page.locator("#compare-btn").click()
    page.wait_for_function("document.querySelector('#compare-note').innerText.includes('outside the toy world')",
                           timeout=180_000)
    screenshot(page, tmp_path, "compare-outside")
    page.close()


def test_browser_png_info_fills_the_prompts_and_compares_seed(server, browser, tmp_path):
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    png = tmp_path / "a1111.png"
    info = PngInfo()
    info.add_text("parameters", "(masterpiece:1.2), a red fox <lora:x:1>\nNegative prompt: EasyNegative, blurry\n"
                                "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1234, Size: 512x512")
    Image.new("RGB", (64, 64), "white").save(png, pnginfo=info)
    page = browser.new_page(viewport={"width": 1280, "height": 1200})
    page.goto(server, wait_until="networkidle")
    page.locator("#png-info input[type=file]").set_input_files(str(png))
    page.wait_for_function("document.querySelector('#prompt textarea').value.length > 0", timeout=30_000)
    assert page.locator("#prompt textarea").input_value() == "(masterpiece:1.2), a red fox <lora:x:1>"
    assert page.locator("#negative textarea").input_value() == "EasyNegative, blurry"
    assert "Seed: 1234" in page.locator("#png-settings textarea").input_value()
    screenshot(page, tmp_path, "png-info")
    page.get_by_role("tab", name="Compare").click()
    page.wait_for_function("document.querySelector('#c-seeds textarea, #c-seeds input').value === '1234'",
                           timeout=10_000)
    assert page.locator("#c-prompt textarea").input_value() == "(masterpiece:1.2), a red fox <lora:x:1>"
    page.close()


def test_browser_batch_picks_columns_and_shows_an_error_once(server, browser, tmp_path):
    lib = tmp_path / "library.csv"
    long = "a lighthouse on a cliff at dusk, " * 6
    lib.write_text(f'id,text,neg\n1,"{long}<lora:x:1>",blurry\n', encoding="utf-8")
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.goto(server, wait_until="networkidle")
    page.get_by_role("tab", name="Batch").click()
    page.locator("#b-upload input[type=file]").set_input_files(str(lib))
    # The column pickers fill from the file's header.
    page.wait_for_function("document.querySelector('#b-prompt-col input').value === 'text'", timeout=30_000)
    assert page.locator("#b-neg-col input").input_value() == "neg"
    page.locator("#batch-btn").click()
    page.wait_for_function("document.querySelector('#b-summary textarea').value.includes('1/1 rows')", timeout=60_000)
    # The translation stands beside its source, on screen, without scrolling sideways.
    source, translated = page.locator("#b-preview span.text").filter(has_text="lighthouse").all()[:2]
    first, second = source.bounding_box(), translated.bounding_box()
    assert first["x"] < second["x"] and second["x"] + second["width"] <= 1280 and second["y"] < 1000
    assert "<lora:x:1>" in source.inner_text() and "a lighthouse on a cliff" in translated.inner_text()
    assert "<lora" not in translated.inner_text()
    screenshot(page, tmp_path, "batch")
    # A file that cannot be migrated: its reason, once, with the file's own name and no server path.
    empty = tmp_path / "empty.csv"
    empty.write_text("", encoding="utf-8")
    page.locator("#b-upload button[aria-label*='lear'], #b-upload button[title*='lear']").first.click()
    page.locator("#b-upload input[type=file]").set_input_files(str(empty))
    page.wait_for_timeout(1000)
    page.locator("#batch-btn").click()
    page.locator("#b-error").get_by_text("empty file").wait_for(timeout=60_000)
    text = page.locator("#b-error").inner_text()
    assert "empty.csv" in text and "/tmp" not in text
    assert page.get_by_text("empty file").count() == 1  # no toast, no badge per output
    assert page.locator(".toast-body, .error").count() == 0
    screenshot(page, tmp_path, "batch-error")
    page.close()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "c", "(x:1.2)"]), max_size=12),
       st.lists(st.sampled_from(["a", "b", "c", "(x:1.2)"]), max_size=12))
def test_word_diff_shows_both_sides(before, after):
    from app import word_diff

    spans = word_diff(" ".join(before), " ".join(after))
    side = lambda kind: " ".join(t.strip() for t, k in spans if k in (None, kind) and t.strip())  # noqa: E731
    assert side("removed") == " ".join(before) and side("added") == " ".join(after)


def test_word_diff_of_megabyte_prompts_is_bounded():
    """A 5 MB prompt did not finish in 10 minutes (SequenceMatcher); the changed middle is now bounded."""
    import time

    from app import word_diff

    a = "a red fox in snow " * 250_000
    b = "a crimson fox in snow " * 250_000
    t = time.perf_counter()
    spans = word_diff(a, b)
    assert time.perf_counter() - t < 30 and [k for _, k in spans] == [None, "removed", "added", None]

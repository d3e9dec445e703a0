"""The Gradio app: each tab's API through gradio_client, and a real browser (Debian's Chromium) session."""

from __future__ import annotations

import json
import os
import shutil
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import launch_chromium



def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    from app import ServeConfig, run_serve

    cfg = ServeConfig(port=free_port(), max_seeds=2)
    demo = run_serve(cfg, log=lambda *_: None, block=False)
    yield f"http://127.0.0.1:{cfg.port}/"
    demo.close()


@pytest.fixture(scope="module")
def client(server):
    from gradio_client import Client

    return Client(server, verbose=False)


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
    prompt, negative, diff, warnings, tokens = client.predict(
        "(masterpiece:1.2), a cat <lora:x:1>", "EasyNegative, ugly", api_name="/translate")
    assert prompt == "(masterpiece:1.2), a cat" and negative == "ugly"
    assert {"token": "<lora:x:1> ", "class_or_confidence": "removed"} in diff
    assert "network-dropped" in warnings and "embedding-dropped" in warnings
    assert "[4] -> [4]" in tokens


def test_compare_tab_renders_a_grid_over_seeds(client):
    # No GPU and no SD weights here: Compare renders with the toy world, and says so.
    gallery, translation, summary, note = client.predict("a crimson circle", "", 2, 0, api_name="/compare")
    assert len(gallery) == 6  # source | target | oracle for each of 2 seeds
    assert translation == "a crimson circle"
    assert "mean agreement" in summary and "toy-sd2" in summary
    assert "oracle translation 'a red circle on a white background'" in summary
    assert "negative: 'a red outlined circle on a white background'" in summary
    assert "toy world" in note
    # A prompt outside the toy grammar still renders, without an oracle row.
    gallery, translation, summary, _ = client.predict("a red fox, <lora:x:1>", "", 1, 0, api_name="/compare")
    assert len(gallery) == 2 and translation == "a red fox" and "oracle" not in summary
    with pytest.raises(Exception, match="maximum value 2|seeds must be between 1 and 2"):
        client.predict("a fox", "", 3, 0, api_name="/compare")


def test_batch_tab(client, tmp_path):
    from gradio_client import handle_file

    lib = tmp_path / "lib.jsonl"
    lib.write_text('{"prompt": "a <lora:x:1> cat", "id": 1}\n{"nope": 1}\n', encoding="utf-8")
    migrated, errors, summary = client.predict(handle_file(str(lib)), "prompt", "", api_name="/batch")
    rows = [json.loads(x) for x in open(migrated, encoding="utf-8").read().splitlines()]
    assert rows == [dict(rows[0], prompt="a <lora:x:1> cat", id=1, translated_prompt="a cat")]
    assert "no key 'prompt'" in open(errors, encoding="utf-8").read()
    assert "1/2 rows" in summary


def test_browser_types_a_prompt_and_sees_the_translation(server, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page(viewport={"width": 1200, "height": 1400})
        page.goto(server, wait_until="networkidle")
        page.locator("#prompt textarea").fill("(masterpiece:1.2), a lighthouse at dusk, <lora:add_detail:0.7>")
        page.locator("#translate-btn").click()
        result = page.locator("#translated textarea")
        page.wait_for_function("document.querySelector('#translated textarea').value.length > 0", timeout=60_000)
        assert result.input_value() == "(masterpiece:1.2), a lighthouse at dusk"
        shot = tmp_path / "translate.png"
        page.screenshot(path=str(shot), full_page=True)
        if os.environ.get("SD_BRIDGE_SCREENSHOT"):  # keep a copy to look at
            shutil.copy(shot, os.environ["SD_BRIDGE_SCREENSHOT"])
        browser.close()
    assert shot.stat().st_size > 10_000


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

"""eval/: metrics, the three report files, planted wins, the HTML in a real browser, bad inputs."""

from __future__ import annotations

import json

import datasets
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import accelerate_launch, launch_chromium
from eval.config import EvalConfig
from eval.metrics import bootstrap_ci, gap_recovered, mean, paired, regressions
from eval.run import run_eval

TINY = dict(source="tiny-sd15", scorer="tiny-clip", device="cpu", seeds=2)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(-1, 1, allow_nan=False), min_size=1, max_size=40), st.integers(0, 100))
def test_bootstrap_interval_contains_the_mean(values, seed):
    lo, hi = bootstrap_ci(values, n=200, seed=seed)
    assert lo <= mean(values) <= hi


def test_paired_and_regressions():
    same = paired([0.5, 0.7], [0.5, 0.7])
    assert same["delta_mean"] == 0 and same["tie"] == 1.0 and same["win"] == same["loss"] == 0
    p = paired([0.9, 0.5, 0.5], [0.5, 0.5, 0.6], tie=0.01)
    assert (p["win"], p["tie"], p["loss"]) == (1 / 3, 1 / 3, 1 / 3)
    assert regressions(["a", "b"], [0.5, 0.4], [0.5, 0.6], threshold=0.05) == [
        {"prompt": "b", "delta": pytest.approx(-0.2), "agreement": 0.4, "identity": 0.6}]


def test_gap_recovered_is_the_share_of_the_oracle_gain():
    base, oracle = [0.2, 0.3, 0.4, 0.1], [0.8, 0.7, 0.9, 0.6]
    assert gap_recovered(oracle, base, oracle) == {"fraction": 1.0, "ci95": [1.0, 1.0]}
    assert gap_recovered(base, base, oracle) == {"fraction": 0.0, "ci95": [0.0, 0.0]}
    half = [b + (o - b) / 2 for b, o in zip(base, oracle)]
    assert gap_recovered(half, base, oracle)["fraction"] == pytest.approx(0.5)
    assert gap_recovered(base, base, base)["fraction"] is None  # no gap: the ratio is undefined


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1), st.floats(0, 1)), min_size=2, max_size=30))
def test_gap_recovered_interval_contains_the_fraction(triples):
    s, b, o = (list(x) for x in zip(*triples))
    g = gap_recovered(s, b, o, n=200)
    if g["fraction"] is not None:
        assert g["ci95"][0] <= g["fraction"] <= g["ci95"][1]


@pytest.fixture(scope="module")
def planted(tmp_path_factory, prompts_dir):
    """A 'model shift' we know the answer to: the source images were drawn from prompt A, the dataset says
    the user wrote B. Identity (B on the target) misses; the planted translation B -> A is exact."""
    from data.gather import GatherConfig, run_gather

    root = tmp_path_factory.mktemp("planted")
    a_prompts = ["a red fox in the snow", "an old lighthouse at dusk", "a bowl of ramen, studio photo"]
    b_prompts = ["a cat on a sofa", "a city street at noon", "portrait of a knight"]
    src = root / "a.txt"
    src.write_text("\n".join(a_prompts) + "\n")
    run_gather(GatherConfig(prompts=str(src), out=root / "gathered", preset="tiny-sd15", scorer="tiny-clip", seeds=2,
                            device="cpu", progress=False), log=lambda *_: None)
    ds = datasets.load_from_disk(str(root / "gathered"))
    mapping = dict(zip(a_prompts, b_prompts))
    ds.map(lambda r: {"prompt": mapping[r["prompt"]]}).save_to_disk(str(root / "shifted"))
    (root / "translations.jsonl").write_text("".join(json.dumps({"prompt": b, "translated_prompt": a}) + "\n"
                                                     for a, b in zip(a_prompts, b_prompts)))
    return root


# Tiny models barely listen to their prompts (agreement ~0.9999 anyway), so ties are judged exactly here.
@pytest.fixture(scope="module")
def report_dir(planted):
    out = planted / "report"
    run_eval(EvalConfig(prompts=str(planted / "shifted"), out=out, target="tiny-sd15",
                        translations=planted / "translations.jsonl", tie=0.0, **TINY), log=lambda *_: None)
    return out


def test_planted_better_translation_wins_and_identity_ties_itself(report_dir):
    report = json.loads((report_dir / "report.json").read_text())
    s = report["strategies"]
    assert set(s) == {"identity", "syntax", "file:translations"}
    assert s["identity"]["vs_identity"]["delta_mean"] == 0 and s["identity"]["vs_identity"]["tie"] == 1.0
    planted = s["file:translations"]
    assert planted["agreement_mean"] == pytest.approx(1.0, abs=1e-4)  # same model, prompt and seed as the source
    assert planted["vs_identity"]["win"] == 1.0 and planted["vs_identity"]["delta_mean"] > 0
    lo, hi = planted["agreement_ci95"]
    assert lo <= planted["agreement_mean"] <= hi
    assert len(report["rows"]) == 3 and all(len(r["strategies"]["identity"]["per_seed"]) == 2 for r in report["rows"])


def test_the_three_report_files_agree(report_dir):
    report = json.loads((report_dir / "report.json").read_text())
    md = (report_dir / "report.md").read_text()
    page = (report_dir / "report.html").read_text()
    for name, agg in report["strategies"].items():
        number = f"{agg['agreement_mean']:.4f}"
        assert f"| {name} | {number} |" in md
        assert f"<td>{name}</td><td>{number}</td>" in page
    assert page.count("<img") == 2 + 3 * 4  # two plots; per prompt: source + 3 strategies
    assert (report_dir / "agreement.png").stat().st_size > 0 and (report_dir / "deltas.png").stat().st_size > 0
    assert json.loads((report_dir / "config.json").read_text())["config"]["seeds"] == 2


def test_report_is_deterministic(planted, report_dir, tmp_path):
    again = tmp_path / "again"
    run_eval(EvalConfig(prompts=str(planted / "shifted"), out=again, target="tiny-sd15",
                        translations=planted / "translations.jsonl", cache_dir=tmp_path / "fresh-cache", tie=0.0,
                        **TINY),
             log=lambda *_: None)
    a, b = json.loads((report_dir / "report.json").read_text()), json.loads((again / "report.json").read_text())
    a.pop("renders"), b.pop("renders")
    assert a == b


def test_prompt_file_input_renders_sources_once(tmp_path, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red fox\na blue car\n")
    out = tmp_path / "r"
    report = run_eval(EvalConfig(prompts=str(prompts), out=out, target="tiny-sd2", **TINY),
                      log=lambda *_: None)
    assert report["prompts"] == 2 and report["strategies"]["syntax"]["vs_identity"]["tie"] == 1.0
    # The source renders have their own bar: eval was silent for 49 s before its first line (issue #43).
    assert "source renders (tiny-sd15): 100%" in capsys.readouterr().err


def test_html_report_opens_in_chromium_with_every_image(report_dir, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page(viewport={"width": 1200, "height": 1600})
        page.goto((report_dir / "report.html").as_uri(), wait_until="load")
        loaded = page.evaluate("Array.from(document.images).map(i => i.complete && i.naturalWidth > 0)")
        assert loaded and all(loaded), loaded
        shot = tmp_path / "report.png"
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert shot.stat().st_size > 10_000


def test_bad_inputs(planted, tmp_path):
    from bridge.models.rewriter import AdapterMeta

    broken = tmp_path / "broken"
    datasets.Dataset.from_dict({"prompt": ["a"], "seed": [1]}).save_to_disk(str(broken))
    with pytest.raises(ValueError, match="lacks column"):
        run_eval(EvalConfig(prompts=str(broken), out=tmp_path / "o", target="tiny-sd2", **TINY), log=lambda *_: None)
    with pytest.raises(ValueError, match="rendered with"):
        run_eval(EvalConfig(prompts=str(planted / "shifted"), out=tmp_path / "o", target="tiny-sd2",
                            **{**TINY, "source": "tiny-sd2"}), log=lambda *_: None)
    other_target = tmp_path / "adapter"
    other_target.mkdir()
    AdapterMeta("tiny-t5", "tiny-v1", "tiny-sd15", "sd2-base").save(other_target)
    # A wrong or missing adapter is refused before any render: no report directory, no render cache.
    prompt_file = tmp_path / "p.txt"
    prompt_file.write_text("a red fox\n")
    with pytest.raises(ValueError, match="trained for target 'sd2-base'"):
        run_eval(EvalConfig(prompts=str(prompt_file), out=tmp_path / "fresh", target="tiny-sd2",
                            adapter=[other_target], **TINY), log=lambda *_: None)
    with pytest.raises(FileNotFoundError, match="not an sd-bridge adapter directory"):
        run_eval(EvalConfig(prompts=str(prompt_file), out=tmp_path / "fresh", target="tiny-sd2",
                            adapter=[tmp_path / "typo"], **TINY), log=lambda *_: None)
    assert not (tmp_path / "fresh").exists()
    (tmp_path / "t.jsonl").write_text('{"prompt": "unrelated", "translated_prompt": "x"}\n')
    with pytest.raises(ValueError, match="no translation for 3 of 3"):
        run_eval(EvalConfig(prompts=str(planted / "shifted"), out=tmp_path / "o", target="tiny-sd2",
                            translations=tmp_path / "t.jsonl", **TINY), log=lambda *_: None)


@pytest.mark.slow
def test_two_processes_split_prompts_and_agree(planted, report_dir, tmp_path):
    import subprocess

    out = tmp_path / "two"
    cmd = [*accelerate_launch(2), "-m", "bridge.cli", "eval",
           "--prompts", str(planted / "shifted"), "--out", str(out), "--source", "tiny-sd15", "--target", "tiny-sd15",
           "--scorer", "tiny-clip", "--translations", str(planted / "translations.jsonl"), "--tie", "0",
           "--device", "cpu"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = json.loads((report_dir / "report.json").read_text()), json.loads((out / "report.json").read_text())
    assert [r["prompt"] for r in one["rows"]] == [r["prompt"] for r in two["rows"]]
    for name in one["strategies"]:
        assert two["strategies"][name]["agreement_mean"] == pytest.approx(one["strategies"][name]["agreement_mean"],
                                                                          abs=1e-3)


def test_oracle_comes_from_the_prompts_file_where_it_has_one(tmp_path):
    """A woven toy prompt (`toyworld prompts --syntax`) carries its oracle in the file: the drift table cannot read
    A1111 syntax, so eval --oracle takes the file's; a prompt the file lacks gets the drift table's."""
    import json

    from eval.run import Item, _file_oracles, _oracle
    from toyworld import world

    [row] = [r for r in world.weave(world.generate_prompts(30, 8, "heldout"), 1.0, 8) if "weight" in r.get("syntax", [])][:1]
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps(row) + "\n", encoding="utf-8")
    items = [Item(row["prompt"], "", [0], None, None), Item("a crimson circle", "", [0], None, None)]
    got = _oracle(items, _file_oracles(str(path)))
    assert got["prompts"] == [row["oracle"], world.oracle("a crimson circle").prompt]
    assert got["negatives"][0] == row["oracle_negative_prompt"]
    with pytest.raises(ValueError, match="--oracle needs toy-world prompts"):
        _oracle(items[:1])  # without the file, the weights are not a word of the toy world
    assert _file_oracles(str(tmp_path / "missing.jsonl")) == {} and _file_oracles(str(tmp_path)) == {}

"""Numbers live in results files, not prose: every figure the README and docs/ quote is a link to the results file
that holds it, `[+0.295 [+0.255, +0.334]](docs/results.md#toyworld_drift "drift.delta; drift.delta_ci95")`, and shows what that
file says; a time, rate, ratio, percentage or score written anywhere else is an error. docs/results.md is what
`python -m benchmarks.results` makes of benchmarks/results/*.json."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from benchmarks import results

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted(p for p in (ROOT / "docs").glob("*.md") if p.name != "results.md")]
RECORDS = results.load()

# [TEXT](…results.md#NAME "KEY; KEY…"): TEXT may hold one level of brackets (an interval); keys are dotted paths.
LINK = re.compile(r'\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\((?:docs/)?results\.md#([\w-]+) "([^"]+)"\)')
NUMBER = re.compile(r"[-+−]?\d[\d,]*(?:\.\d+)?")
# What counts as a figure in prose: a number with a unit of time, rate, size, ratio or share, a signed decimal
# (a delta), or a decimal of two or more places (a score).
FIGURE = re.compile(r"(?<![\w.])(?:(?!95% (?:bootstrap|confidence|interval))[-+−]?\d[\d,]*(?:\.\d+)?\s?(?:%|×(?!\d)|x\b|s\b|ms\b|min\b|minutes?\b|seconds?\b"
                    r"|hours?\b|(?:prompts|images|rows|requests|req)/s\b|[KMG]i?B\b|kB\b)"
                    r"|[+−]\d+\.\d+|\b\d+\.\d{2,}\b(?!\.\d))")


def prose(text: str) -> str:
    """The text a reader reads as prose: fenced blocks, code spans, result links and link targets removed."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    text = LINK.sub(" ", text)
    text = re.sub(r"`[^`]*`", " ", text)
    return re.sub(r"\]\([^)]*\)", "]", text)


def numbers(text: str) -> list[tuple[float, int, bool]]:
    """(value, decimals shown, shown as a percentage) of each number in a link's text."""
    out = []
    for m in NUMBER.finditer(text):
        raw = m.group().replace(",", "").replace("−", "-")
        decimals = len(raw.split(".")[1]) if "." in raw else 0
        out.append((float(raw), decimals, text[m.end():m.end() + 1] == "%"))
    return out


def values(value) -> list[float]:
    if isinstance(value, (list, tuple)):
        return [x for v in value for x in values(v)]
    return [float(value)]


def shows(shown: tuple[float, int, bool], value: float) -> bool:
    number, decimals, percent = shown
    close = lambda v: abs(number - v) <= 0.5 * 10 ** -decimals + 1e-9  # noqa: E731
    return close(value) or (percent and close(100 * value))


def links():
    return [(doc.relative_to(ROOT), *m.groups()) for doc in DOCS for m in LINK.finditer(doc.read_text("utf-8"))]


def test_there_are_results_files_to_quote():
    assert len(RECORDS) >= 5
    for name, record in RECORDS.items():
        assert record["command"].startswith("uv run python -m benchmarks.") and record["machine"]["cpu"], name
        assert {"date", "commit", "figures"} <= set(record), name


@pytest.mark.parametrize("doc, text, name, keys", links(), ids=lambda v: str(v)[:40])
def test_every_quoted_figure_is_its_results_file(doc, text, name, keys):
    assert name in RECORDS, f"{doc}: no benchmarks/results/{name}.json for {text!r}"
    expected = [v for key in keys.split(";") for v in values(results.lookup(RECORDS[name], key.strip()))]
    shown = numbers(text)
    assert len(shown) == len(expected) and all(map(shows, shown, expected)), \
        f"{doc}: {text!r} quotes {name} {keys}, which holds {expected}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_no_figure_outside_a_results_link(doc):
    """Times, rates and scores typed by hand go stale; CHANGELOG.md holds the history of earlier runs."""
    found = [m.group() for m in FIGURE.finditer(prose(doc.read_text("utf-8")))]
    assert not found, f"{doc.name} quotes figures that no results file backs: {found}"


def test_results_md_is_generated_from_the_files():
    assert (ROOT / "docs" / "results.md").read_text("utf-8") == results.render(RECORDS), \
        "docs/results.md is stale: run `uv run python -m benchmarks.results`"


@pytest.mark.parametrize("text, bad", [("it took 387 s on 2 cores", True), ("agreement +0.295", True),
                                       ("96.7% of renders", True), ("3.2× faster", True), ("scored 0.957", True),
                                       ("75 tokens per chunk at 512 px", False), ("gradio 6.31.0", False),
                                       ("`--min-group-std 0.001`", False),
                                       ("a paired 95% bootstrap interval", False)])
def test_the_figure_check_can_fail(text, bad):
    assert bool(FIGURE.search(prose(text))) is bad


def test_a_link_that_misquotes_its_file_fails():
    record = {"figures": {"gap": 0.8213, "ci": [0.69, 0.94]}}
    expected = [v for key in ("gap", "ci") for v in values(results.lookup(record, key))]
    assert all(map(shows, numbers("0.82 [0.69, 0.94]"), expected))
    assert not all(map(shows, numbers("0.85 [0.69, 0.94]"), expected))
    assert shows(numbers("82%")[0], 0.8213) and not shows(numbers("82.5%")[0], 0.8213)


def test_a_run_on_another_toy_build_is_named_and_says_so(tmp_path, monkeypatch):
    """A benchmark run with `--weights DIR` writes NAME-weights-DIRNAME.json, and its command carries the build it
    measured, so it never overwrites or passes for the committed build's results."""
    from toyworld.presets import WEIGHTS_ENV

    assert results.weights_variant(["--n", "8", "--weights", "/tmp/x/shapes3000"]) == "weights-shapes3000"
    assert results.weights_variant(["--weights=/tmp/b"]) == "weights-b" and results.weights_variant(["--n", "8"]) == ""
    monkeypatch.setattr(results, "results_dir", lambda: tmp_path)
    monkeypatch.setenv(WEIGHTS_ENV, "")  # restored after the test, whatever use_weights sets
    path = results.write("toyworld_syntax-weights-build", {"x": 1}, ["--weights", "build"], 1.0, "toyworld_syntax")
    assert results.json.loads(path.read_text())["command"] == ("uv run python -m benchmarks.toyworld_syntax "
                                                               "--weights build")
    results.use_weights(str(tmp_path / "build"))  # set some other way than the run's own flag: the command says so
    path = results.write("toyworld_syntax", {"x": 1}, ["--n", "8"], 1.0, "toyworld_syntax")
    assert results.json.loads(path.read_text())["command"] == (f"{WEIGHTS_ENV}={tmp_path / 'build'} uv run python -m "
                                                               "benchmarks.toyworld_syntax --n 8")
    monkeypatch.delenv(WEIGHTS_ENV)  # the usual run: the committed build, the variable never set
    path = results.write("toyworld_syntax", {"x": 1}, ["--n", "8"], 1.0, "toyworld_syntax")
    assert results.json.loads(path.read_text())["command"] == "uv run python -m benchmarks.toyworld_syntax --n 8"

"""A1111 PNG-info "parameters" text round-trips."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.syntax.infotext import InfoText, format_infotext, parse_infotext
from conftest import read_jsonl

SAMPLE = """masterpiece, best quality, (1girl:1.2),
white hair, <lora:detail:0.5>
Negative prompt: (worst quality, low quality:1.4), EasyNegative,
monochrome
Steps: 25, Sampler: DPM++ SDE Karras, CFG scale: 7, Seed: 3212833155, Size: 512x1024, Model hash: 77b7dc4ef0, \
Model: "Meina V10, baked VAE", Clip skip: 2, ADetailer prompt: "face: smiling", Custom key: x"""


def test_parse_sample():
    info = parse_infotext(SAMPLE)
    assert info.prompt == "masterpiece, best quality, (1girl:1.2),\nwhite hair, <lora:detail:0.5>"
    assert info.negative_prompt == "(worst quality, low quality:1.4), EasyNegative,\nmonochrome"
    assert info.params["Model"] == "Meina V10, baked VAE"  # JSON-quoted value
    assert info.params["ADetailer prompt"] == "face: smiling"
    assert info.params["Custom key"] == "x"  # unknown keys kept
    assert list(info.params)[:3] == ["Steps", "Sampler", "CFG scale"]  # order kept
    assert info.size == (512, 1024) and info.clip_skip == 2
    assert format_infotext(info) == SAMPLE


def test_no_parameters_line_means_all_prompt():
    info = parse_infotext("just a prompt\nover two lines")
    assert info == InfoText("just a prompt\nover two lines", None, {})
    assert parse_infotext("a\nNegative prompt: b").negative_prompt == "b"
    assert parse_infotext("").prompt == ""


def test_shared_full_infotexts_round_trip(prompts_dir):
    rows = [r for r in read_jsonl(prompts_dir / "a1111.jsonl") if r["parameters"] and "Seed" in r["parameters"]]
    assert len(rows) >= 20
    for row in rows:
        info = InfoText(row["prompt"].strip(), row["negative_prompt"], row["parameters"])
        text = format_infotext(info)
        assert parse_infotext(text) == info
        assert format_infotext(parse_infotext(text)) == text


values = st.text(st.characters(blacklist_categories=["Cs", "Cc"], blacklist_characters='\\"'), min_size=1,
                 max_size=20).filter(lambda v: v == v.strip())
keys = st.from_regex(r"[A-Z][a-z]{1,8}( [a-z]{1,6})?", fullmatch=True)


@settings(max_examples=200, deadline=None)
@given(prompt=st.text(st.characters(blacklist_categories=["Cs", "Cc"]), min_size=1, max_size=60)
       .filter(lambda p: p.strip() == p and not p.startswith("Negative prompt:")),
       negative=st.one_of(st.none(), st.text(st.characters(blacklist_categories=["Cs", "Cc"]), max_size=40)
                          .filter(lambda p: p.strip() == p)),
       params=st.dictionaries(keys, values, min_size=3, max_size=6))
def test_format_then_parse_round_trips(prompt, negative, params):
    info = InfoText(prompt, negative, params)
    assert parse_infotext(format_infotext(info)) == info


def test_read_as_a1111_reads_it():
    """A1111 `parse_generation_parameters`: lines stripped (CRLF too), a repeated `Negative prompt:` prefix
    stripped, empty values dropped, `Hypernet` turned into a tag on the prompt."""
    crlf = "a cat,  \r\n  on a mat\r\nNegative prompt: ugly\r\nNegative prompt: blurry\r\n" \
           "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Hypernet: anime_3, Hypernet strength: 0.6\r\n"
    info = parse_infotext(crlf)
    assert info.prompt == "a cat,\non a mat<hypernet:anime_3:0.6>"
    assert info.negative_prompt == "ugly\nblurry"
    assert info.params == {"Steps": "20", "Sampler": "Euler a", "CFG scale": "7", "Seed": "1"}
    # Without a strength A1111 writes 1.0; a key with no value is dropped.
    info = parse_infotext("x\nSteps: 20, Sampler: , CFG scale: 7, Seed: 1, Hypernet: h")
    assert info.prompt == "x<hypernet:h:1.0>" and "Sampler" not in info.params
    # The tag is then an extra network like any other: the policy drops SD1 hypernets for SD2 with a warning.
    from bridge.syntax.policy import apply_policy
    result = apply_policy(info.prompt)
    assert result.prompt == "x" and any("hypernet" in w.message for w in result.warnings)
    # And the file written back reads the same.
    assert parse_infotext(format_infotext(parse_infotext(crlf))) == parse_infotext(crlf)

"""Prompt sources (every format) and cleaning decisions."""

from __future__ import annotations

import json

import pytest

from bridge.io.clean import clean_records, load_deny_list
from bridge.io.sources import PromptRecord, SourceError, read_records


def prompts_of(spec, **kw):
    return [(r.prompt, r.negative_prompt) for r in read_records(str(spec), **kw)]


def test_text_file(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("a cat\n\n(b:1.2), dog\r\n", encoding="utf-8")
    assert prompts_of(f) == [("a cat", None), ("", None), ("(b:1.2), dog", None)]


def test_csv_and_tsv_with_columns_quotes_and_newlines(tmp_path):
    f = tmp_path / "p.csv"
    f.write_text('id,text,neg\n1,"a cat, on a mat","blurry"\n2,"two\nlines",\n', encoding="utf-8")
    assert prompts_of(f, prompt_column="text", negative_column="neg") == [("a cat, on a mat", "blurry"),
                                                                         ("two\nlines", "")]
    t = tmp_path / "p.tsv"
    t.write_text("prompt\tnegative_prompt\na cat\tugly\n", encoding="utf-8")
    assert prompts_of(t) == [("a cat", "ugly")]  # negative_prompt column used when present


def test_jsonl_parquet_and_png_folder(tmp_path, prompts_dir):
    rows = prompts_of(prompts_dir / "a1111.jsonl")
    assert len(rows) == 1347 and rows[0][1].startswith("(worst quality")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"prompt": ["a", "b"], "negative_prompt": ["x", None]}), tmp_path / "p.parquet")
    assert prompts_of(tmp_path / "p.parquet") == [("a", "x"), ("b", None)]

    from PIL import Image, PngImagePlugin

    folder = tmp_path / "pngs"
    folder.mkdir()
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a red fox\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1")
    Image.new("RGB", (8, 8)).save(folder / "a.png", pnginfo=info)
    Image.new("RGB", (8, 8)).save(folder / "b.png")  # no metadata: skipped
    recs = list(read_records(str(folder)))
    assert [(r.prompt, r.negative_prompt, r.params["Seed"]) for r in recs] == [("a red fox", "blurry", "1")]


def test_hf_dataset_offline_is_a_clear_error():
    with pytest.raises(SourceError, match="could not be loaded.*Offline"):
        list(read_records("someone/some-prompts"))


@pytest.mark.parametrize("name, content, kw, needle", [
    ("missing.txt", None, {}, "not found"),
    ("p.csv", "", {}, "empty file"),
    ("p.csv", "text\na\n", {}, "no column 'prompt'"),
    ("p.csv", "prompt\na\n", {"negative_column": "neg"}, "no column 'neg'"),
    ("p.jsonl", '{"text": 1}\n', {}, "no key 'prompt'"),
    ("p.jsonl", "{broken\n", {}, "p.jsonl:1: not valid JSON"),
    ("p.csv", 'prompt\na,b\n', {}, "more fields than the header"),
    ("p.xyz", "a", {}, "unknown prompt file type"),
])
def test_bad_inputs_name_the_problem(tmp_path, name, content, kw, needle):
    path = tmp_path / name
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(SourceError, match=needle):
        list(read_records(str(path), **kw))


def test_undecodable_bytes_name_the_line(tmp_path):
    f = tmp_path / "p.txt"
    f.write_bytes(b"fine\nbad \xff byte\n")
    with pytest.raises(SourceError, match=r"p.txt:2: undecodable bytes"):
        list(read_records(str(f)))


def test_cleaning_decisions(tmp_path):
    deny = tmp_path / "deny.txt"
    deny.write_text("# comment\nforbidden\n", encoding="utf-8")
    records = [PromptRecord(p, n) for p, n in [
        ("a  cat\n on a mat", "  blurry "), ("a cat on a mat", None), ("   ", None), ("", None),
        ("a FORBIDDEN thing", None), ("dog", None), ("<lora:x:1>", None), (", ".join(["word"] * 50), None),
    ]]
    kept, report = clean_records(records, min_tokens=1, max_tokens=60, deny=load_deny_list(deny))
    assert [(r.prompt, r.negative_prompt) for r in kept] == [("a cat on a mat", "blurry"), ("dog", None)]
    assert report.to_dict() == {"read": 8, "kept": 2, "dropped": {
        "deny_list": 1, "duplicate": 1, "empty": 2, "too_few_tokens": 1, "too_many_tokens": 1}}
    kept, _ = clean_records([PromptRecord("a", "neg")], ignore_negative=True)
    assert kept[0].negative_prompt is None
    with pytest.raises(FileNotFoundError, match="deny-list"):
        load_deny_list(tmp_path / "nope.txt")


def test_shared_corpus_reads_completely(prompts_dir):
    rows = [json.loads(line) for line in (prompts_dir / "plain.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(prompts_of(prompts_dir / "plain.jsonl")) == len(rows) == 4000

"""`sd-bridge migrate`: formats round-trip, bad rows isolated, resume after a kill, atomic output."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from PIL import Image, PngImagePlugin

from bridge.cli import main
from bridge.io.migrate import ADDED


def migrate(*args: str) -> int:
    try:
        return main(["migrate", *args, "--no-progress"])
    except SystemExit as exc:  # config errors exit from the parser
        return exc.code


def test_csv_round_trip_with_quotes_newlines_and_extra_columns(tmp_path):
    src = tmp_path / "lib.csv"
    rows = [
        {"id": "1", "prompt": '(masterpiece:1.2), a "quoted" cat, <lora:x:1>', "negative_prompt": "EasyNegative, ugly",
         "notes": "a, b"},
        {"id": "2", "prompt": "two\nlines", "negative_prompt": "", "notes": "line1\nline2"},
        {"id": "3", "prompt": "[cat:dog:0.5] BREAK __season__", "negative_prompt": "x", "notes": ""},
    ]
    with src.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=["id", "prompt", "negative_prompt", "notes"])
        w.writeheader()
        w.writerows(rows)
    out = tmp_path / "out.csv"
    assert migrate(str(src), "--out", str(out)) == 0
    with out.open(newline="", encoding="utf-8") as fh:
        back = list(csv.DictReader(fh))
    assert list(back[0]) == ["id", "prompt", "negative_prompt", "notes", *ADDED]  # order kept, columns added
    for original, migrated in zip(rows, back):
        assert {k: migrated[k] for k in original} == original
    assert back[0]["translated_prompt"] == '(masterpiece:1.2), a "quoted" cat'
    assert back[0]["translated_negative_prompt"] == "ugly"
    assert [w["code"] for w in json.loads(back[0]["warnings"])] == ["network-dropped", "embedding-dropped"]
    assert back[2]["translated_prompt"] == "[cat:dog:0.5] BREAK __season__"
    from bridge.syntax.tokens import count_tokens

    assert json.loads(back[2]["tokens_before"]) == [count_tokens("dog"), count_tokens("__season__")]
    assert not (tmp_path / "out.csv.errors.jsonl").exists() and not (tmp_path / "out.csv.journal").exists()


def test_jsonl_keeps_every_key_and_txt(tmp_path):
    src = tmp_path / "lib.jsonl"
    src.write_text('{"prompt": "a <lora:x:1> cat", "id": 7, "meta": {"a": [1, 2]}}\n', encoding="utf-8")
    assert migrate(str(src), "--out", str(tmp_path / "o.jsonl")) == 0
    row = json.loads((tmp_path / "o.jsonl").read_text())
    assert row["id"] == 7 and row["meta"] == {"a": [1, 2]} and row["translated_prompt"] == "a cat"
    txt = tmp_path / "lib.txt"
    txt.write_text("a <lora:x:1> cat\n(dog:1.2)\n", encoding="utf-8")
    assert migrate(str(txt), "--out", str(tmp_path / "o.txt")) == 0
    assert (tmp_path / "o.txt").read_text() == "a cat\n(dog:1.2)\n"


def test_malformed_rows_are_reported_and_good_rows_kept(tmp_path):
    src = tmp_path / "lib.jsonl"
    lines = [b'{"prompt": "good one"}', b'{"prompt": "bad \xff bytes"}', b"{broken json", b'{"other": 1}',
             json.dumps({"prompt": "x" * 1_000_000}).encode(), b'{"prompt": "good two"}']
    src.write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "o.jsonl"
    assert migrate(str(src), "--out", str(out)) == 3
    good = [json.loads(x)["translated_prompt"] for x in out.read_text().splitlines()]
    assert good == ["good one", "good two"]
    errors = [json.loads(x) for x in (tmp_path / "o.jsonl.errors.jsonl").read_text().splitlines()]
    assert [e["row"] for e in errors] == [1, 2, 3, 4]
    reasons = " | ".join(e["error"] for e in errors)
    assert "undecodable bytes" in reasons and "not valid JSON" in reasons and "no key 'prompt'" in reasons
    assert "1,000,000 characters" in reasons


def test_hostile_json_rows_are_row_errors(tmp_path):
    src = tmp_path / "lib.jsonl"
    deep = b'{"prompt": "a", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    lone = b'{"prompt": "b", "meta": "\\ud800"}'
    src.write_bytes(b"\n".join([b'{"prompt": "good one"}', deep, lone, b'{"prompt": "good two"}']) + b"\n")
    out = tmp_path / "o.jsonl"
    assert migrate(str(src), "--out", str(out)) == 3
    assert [json.loads(x)["translated_prompt"] for x in out.read_text().splitlines()] == ["good one", "good two"]
    errors = [json.loads(x) for x in (tmp_path / "o.jsonl.errors.jsonl").read_text().splitlines()]
    assert [(e["row"], e["error"]) for e in errors] == [
        (1, "JSON nested too deeply to read"), (2, "a value holds a lone surrogate ('\\ud800'), which UTF-8 cannot encode")]


def test_broken_csv_rows(tmp_path):
    src = tmp_path / "lib.csv"
    src.write_bytes(b'prompt,neg\n"a cat",x\ntoo,many,fields\n"bad \xff",y\n"a dog",z\n')
    out = tmp_path / "o.csv"
    assert migrate(str(src), "--out", str(out), "--negative-column", "neg") == 3
    back = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
    assert [r["prompt"] for r in back] == ["a cat", "a dog"]
    errors = (tmp_path / "o.csv.errors.jsonl").read_text()
    assert "3 fields where the header has 2" in errors and "undecodable" in errors


@pytest.mark.parametrize("content, args, needle", [
    (b"", [], "empty file"),
    (b"text\nx\n", [], "no column 'prompt'"),
    (b"prompt\nx\n", ["--negative-column", "neg"], "no column 'neg'"),
])
def test_usage_errors_exit_2(tmp_path, capsys, content, args, needle):
    src = tmp_path / "lib.csv"
    src.write_bytes(content)
    assert migrate(str(src), "--out", str(tmp_path / "o.csv"), *args) == 2
    assert needle in capsys.readouterr().err
    assert not (tmp_path / "o.csv").exists()


def test_input_is_never_overwritten_unless_in_place(tmp_path, capsys):
    src = tmp_path / "lib.txt"
    src.write_text("a <lora:x:1> cat\n", encoding="utf-8")
    assert migrate(str(src), "--out", str(src)) == 2
    assert "--in-place" in capsys.readouterr().err
    assert migrate(str(src)) == 2
    assert migrate(str(src), "--in-place") == 0
    assert src.read_text() == "a cat\n"
    assert (tmp_path / "lib.txt.bak").read_text() == "a <lora:x:1> cat\n"
    # A second --in-place run never overwrites the backup of the original.
    assert migrate(str(src), "--in-place") == 0
    assert (tmp_path / "lib.txt.bak").read_text() == "a <lora:x:1> cat\n"
    assert (tmp_path / "lib.txt.bak.1").read_text() == "a cat\n"


def test_dry_run_writes_nothing(tmp_path, capsys):
    src = tmp_path / "lib.jsonl"
    src.write_text('{"prompt": "a"}\n{bad\n', encoding="utf-8")
    assert migrate(str(src), "--dry-run") == 0
    report = capsys.readouterr().out.splitlines()  # text unless --json (tests/pipeline/test_json_summaries.py)
    assert "rows: 2" in report and "row errors: 1" in report
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lib.jsonl"]


def test_infotext_and_png_folders(tmp_path, capsys):
    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "a.txt").write_text("a <lora:x:1> cat\nNegative prompt: EasyNegative, ugly\n"
                                 "Steps: 20, Sampler: Euler a, CFG scale: 7, Size: 512x768, Clip skip: 2",
                                 encoding="utf-8")
    out = tmp_path / "out"
    assert migrate(str(texts), "--out", str(out)) == 0
    # Clip skip is SD1's: pasted into A1111 it would change the SD2 run's text layer, so it goes, named.
    assert (out / "a.txt").read_text() == ("a cat\nNegative prompt: ugly\n"
                                           "Steps: 20, Sampler: Euler a, CFG scale: 7, Size: 512x768")
    assert "sd1-settings x1" in capsys.readouterr().out
    pngs = tmp_path / "pngs"
    pngs.mkdir()
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "(fox:1.2), <lora:y:1>\nSteps: 20, Sampler: Euler a, CFG scale: 7")
    Image.new("RGB", (8, 8)).save(pngs / "img.png", pnginfo=info)
    Image.new("RGB", (8, 8)).save(pngs / "plain.png")
    before = (pngs / "img.png").read_bytes()
    # plain.png has no metadata: nothing to migrate, a counted skip and not a failure (it was exit 3).
    assert migrate(str(pngs), "--out", str(tmp_path / "side")) == 0
    log = capsys.readouterr().out
    assert "skipped 1 file(s) with nothing to migrate (no A1111 'parameters' metadata): plain.png" in log
    assert "migrated 1/1 rows" in log
    assert not (tmp_path / "side" / "migrate.errors.jsonl").exists()
    assert (tmp_path / "side" / "img.txt").read_text().startswith("(fox:1.2)\nSteps: 20")
    assert (pngs / "img.png").read_bytes() == before  # images are never rewritten


INFOTEXT = ("(masterpiece:1.2), a <lora:add_detail:0.7> fox in the snow\nNegative prompt: EasyNegative, lowres\n"
            "Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 1234, Size: 512x768, "
            "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, VAE: vae-ft-mse-840000, Clip skip: 2")


@pytest.mark.parametrize("fmt", [None, "infotext"])
def test_a_single_infotext_file_is_one_record(tmp_path, capsys, fmt):
    """A1111's "Save" writes one infotext .txt beside an image. It was read as three prompts (its negative and
    parameters lines migrated as prompts), and `--format infotext` on it ended in a traceback (issue #43)."""
    src, out = tmp_path / "00012-1234.txt", tmp_path / "out.txt"
    src.write_text(INFOTEXT, encoding="utf-8")
    assert migrate(str(src), "--out", str(out), *(["--format", fmt] if fmt else [])) == 0
    log = capsys.readouterr().out
    assert ("reading" in log and "as one A1111 infotext record" in log) == (fmt is None)
    assert out.read_text(encoding="utf-8") == ("(masterpiece:1.2), a fox in the snow\nNegative prompt: lowres\n"
                                               "Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 1234, "
                                               "Size: 512x768")
    assert "migrated 1/1 rows" in log and "sd1-settings x1" in log
    assert sorted(p.name for p in tmp_path.iterdir()) == ["00012-1234.txt", "out.txt"]
    # A prompt-per-line library is still one: a prompt that merely mentions steps is not a parameters line.
    src.write_text("a cat\nSteps: a staircase, stone, moss\na dog\n", encoding="utf-8")
    assert migrate(str(src), "--out", str(tmp_path / "lib.txt")) == 0
    assert len((tmp_path / "lib.txt").read_text().splitlines()) == 3
    # An infotext file into a folder --out is refused before anything is written.
    assert migrate(str(tmp_path / "00012-1234.txt"), "--out", str(tmp_path), "--format", "infotext") == 2


def test_jsonl_parameters_are_fitted_to_the_target(tmp_path):
    src, out = tmp_path / "lib.jsonl", tmp_path / "out.jsonl"
    params = {"Steps": 20, "Size": "512x768", "Model": "v1-5-pruned-emaonly", "Model hash": "6ce0161689",
              "Clip skip": 2}
    src.write_text(json.dumps({"prompt": "a cat", "parameters": params}) + "\n" + json.dumps({"prompt": "a dog"})
                   + "\n", encoding="utf-8")
    assert migrate(str(src), "--out", str(out), "--target", "sd21") == 0
    first, second = [json.loads(line) for line in out.read_text().splitlines()]
    assert first["parameters"] == params  # the input's own values are kept
    assert first["translated_parameters"] == {"Steps": 20, "Size": "512x768"}
    codes = {w["code"]: w for w in first["warnings"]}
    assert codes["sd1-settings"]["field"] == "parameters" and "Model: v1-5-pruned-emaonly" in codes["sd1-settings"]["message"]
    assert "suggested 768x1152" in codes["size"]["message"]  # 512x768 does not fit SD2.1's 768
    assert "translated_parameters" not in second


def test_folder_reruns_in_place_and_bad_files(tmp_path, capsys):
    import os

    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "a.txt").write_text("a <lora:x:1> cat\nSteps: 20, Sampler: Euler a, CFG scale: 7", encoding="utf-8")
    out = tmp_path / "out"
    assert migrate(str(texts), "--out", str(out)) == 0
    # A rerun into the same --out with other settings would mix files written under both: refused, named.
    assert migrate(str(texts), "--out", str(out), "--networks", "keep") == 2
    assert "holds files migrated with networks='drop'; this run has networks='keep'" in capsys.readouterr().err
    # --in-place on a folder rewrites its files (each keeps a backup) instead of skipping them all.
    assert migrate(str(texts), "--in-place") == 0
    assert (texts / "a.txt").read_text().startswith("a cat\n")
    assert (texts / "a.txt.bak").read_text().startswith("a <lora:x:1> cat")
    # One bad file is a row error, never the end of the run: a named pipe (a read would block forever) and a
    # PNG whose text chunk is over Pillow's limit.
    os.mkfifo(texts / "pipe.txt")
    assert migrate(str(texts), "--out", str(tmp_path / "o2")) == 3
    assert "not a regular file" in (tmp_path / "o2" / "migrate.errors.jsonl").read_text()
    pngs = tmp_path / "pngs"
    pngs.mkdir()
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a fox\nSteps: 20, Sampler: Euler a, CFG scale: 7")
    Image.new("RGB", (8, 8)).save(pngs / "good.png", pnginfo=info)
    big = PngImagePlugin.PngInfo()
    big.add_text("parameters", "x" * (PngImagePlugin.MAX_TEXT_CHUNK + 10), zip=True)
    Image.new("RGB", (8, 8)).save(pngs / "huge.png", pnginfo=big)
    assert migrate(str(pngs), "--out", str(tmp_path / "side")) == 3
    assert (tmp_path / "side" / "good.txt").is_file()
    assert "unreadable PNG" in (tmp_path / "side" / "migrate.errors.jsonl").read_text()


def test_an_input_named_like_a_file_the_run_writes_is_refused(tmp_path, capsys):
    src = tmp_path / "o.jsonl.errors.jsonl"
    src.write_text('{"prompt": "a cat"}\n', encoding="utf-8")
    assert migrate(str(src), "--out", str(tmp_path / "o.jsonl")) == 2
    assert "is a file this run would write" in capsys.readouterr().err
    assert src.read_text() == '{"prompt": "a cat"}\n'


@pytest.mark.slow
def test_resume_after_kill_equals_uninterrupted(tmp_path, prompts_dir):
    src = tmp_path / "lib.jsonl"
    lines = (prompts_dir / "a1111.jsonl").read_text(encoding="utf-8").splitlines()
    src.write_text("\n".join(lines * 3) + "\n", encoding="utf-8")
    reference = tmp_path / "ref.jsonl"
    assert migrate(str(src), "--out", str(reference), "--chunk-rows", "50") == 0
    out = tmp_path / "out.jsonl"
    cmd = [sys.executable, "-m", "bridge.cli", "migrate", str(src), "--out", str(out), "--chunk-rows", "50",
           "--no-progress"]
    journal = tmp_path / "out.jsonl.journal"
    for _ in range(3):  # kill it a few times at different points
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        start = json.loads(journal.read_text())["rows"] if journal.exists() else 0
        deadline = time.time() + 120
        while proc.poll() is None and time.time() < deadline:
            if journal.exists():
                try:
                    if json.loads(journal.read_text())["rows"] > start + 100:
                        break
                except (json.JSONDecodeError, OSError):
                    pass
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert journal.exists() and not out.exists(), "the run finished before it was killed"
    assert json.loads(journal.read_text())["rows"] > 300  # three runs each got somewhere
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    assert out.read_bytes() == reference.read_bytes()
    assert not journal.exists() and not (tmp_path / "out.jsonl.partial").exists()


def test_max_chars_covers_the_negative_prompt_too(tmp_path):
    src = tmp_path / "lib.jsonl"
    rows = [{"prompt": "a cat", "negative_prompt": "blurry"}, {"prompt": "x" * 101, "negative_prompt": ""},
            {"prompt": "a dog", "negative_prompt": "y" * 101}]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert main(["migrate", str(src), "--out", str(out), "--max-chars", "100", "--no-progress"]) == 3
    errors = [json.loads(line)["error"] for line in (tmp_path / "out.jsonl.errors.jsonl").read_text().splitlines()]
    assert errors == ["prompt has 101 characters (limit --max-chars 100)",
                      "negative prompt has 101 characters (limit --max-chars 100)"]


@pytest.mark.parametrize("encoding, bom", [("utf-16-le", b""), ("utf-16-be", b""), ("utf-16-le", b"\xff\xfe"),
                                           ("utf-8", b"\xef\xbb\xbf")])
def test_utf16_and_bom_libraries_are_read_not_garbled(tmp_path, capsys, encoding, bom):
    """Windows "Unicode text" exports are UTF-16, often without a BOM; read as UTF-8 they migrated to garbage
    with exit 0."""
    src = tmp_path / "lib.csv"
    src.write_bytes(bom + 'prompt,negative_prompt\r\n"a café, (cat:1.2)",blurry\r\nsnow,\r\n'.encode(encoding))
    out = tmp_path / "o.csv"
    assert migrate(str(src), "--out", str(out)) == 0
    back = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
    assert [(r["prompt"], r["negative_prompt"]) for r in back] == [("a café, (cat:1.2)", "blurry"), ("snow", "")]
    assert ("UTF-16" in capsys.readouterr().out) == encoding.startswith("utf-16")


@pytest.mark.parametrize("kind", ["txt", "csv", "jsonl"])
def test_bare_cr_line_ends_separate_records(tmp_path, kind):
    """Old Mac files end lines with a bare CR; read by bytes, the whole file was one line, and its records
    merged into one error."""
    lines = {"txt": ["a cat", "a dog"], "csv": ["prompt", "a cat", "a dog"],
             "jsonl": ['{"prompt": "a cat"}', '{"prompt": "a dog"}']}[kind]
    src = tmp_path / f"lib.{kind}"
    src.write_bytes("\r".join(lines).encode() + b"\r")
    out = tmp_path / f"o.{kind}"
    assert migrate(str(src), "--out", str(out)) == 0
    records = out.read_text(encoding="utf-8").splitlines()
    assert len(records) == len(lines) and "a cat" in records[-2] and "a dog" in records[-1]
    assert not (tmp_path / f"o.{kind}.errors.jsonl").exists()


def test_csv_fields_over_128_kib_pass_through_without_swallowing_rows(tmp_path):
    """Python's csv refuses a field over 128 KiB: a valid row with a long non-prompt column was rejected, and a
    long quoted multi-line field could swallow the next good row."""
    big = "line\n" * 60_000  # 300 KB, quoted, multi-line
    src = tmp_path / "lib.csv"
    with src.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerows([["prompt", "thumbnail"], ["a cat", big], ["a dog", "x"], ["a fox", big + "end"]])
    out = tmp_path / "o.csv"
    assert migrate(str(src), "--out", str(out)) == 0
    with out.open(newline="", encoding="utf-8") as fh:
        back = list(csv.DictReader(fh))
    assert [(r["prompt"], r["thumbnail"]) for r in back] == [("a cat", big), ("a dog", "x"), ("a fox", big + "end")]


def test_bom_crlf_nul_and_5000_columns_lose_no_good_row(tmp_path):
    header = ["prompt"] + [f"c{k}" for k in range(4_999)]
    rows = [["a cat"] + ["x"] * 4_999, ["a d\x00og"] + ["y"] * 4_999, ["a fox"] + ["z"] * 4_999]
    src = tmp_path / "lib.csv"
    src.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(",".join(r) for r in [header] + rows).encode() + b"\r\n")
    out = tmp_path / "o.csv"
    assert migrate(str(src), "--out", str(out)) == 0
    with out.open(newline="", encoding="utf-8") as fh:
        back = list(csv.reader(fh))
    assert back[0][:5_000] == header and [r[0] for r in back[1:]] == ["a cat", "a d\x00og", "a fox"]
    assert [r[4_999] for r in back[1:]] == ["x", "y", "z"]

"""What `sd-bridge sweep` draws: a grid PNG per prompt and one HTML page of every render.

Grid: a label column (strategy, model, breadth), then a column per seed; under each image the text it was
rendered from and its seed; with a reference index, the render's nearest reference beside it and their
similarity (marked DUPLICATE at or above the threshold).
"""

from __future__ import annotations

import html
import shutil
from pathlib import Path

from bridge.io.images import fit_cell

LINE = 12


def _label(row: dict) -> list[str]:
    b = row["breadth"]
    lines = [row["strategy"], row["model"], f"breadth {b['mean_distance']:.3f}" if b["seeds"] > 1 else "breadth -",
             f"{b['clusters']} cluster{'s' if b['clusters'] != 1 else ''}"]
    if row.get("breadth_ratio") is not None:
        lines.append(f"ratio {row['breadth_ratio']:.2f}")
    if "duplicates" in row:
        lines.append(f"dup {row['duplicates']['duplicates']}/{row['duplicates']['renders']}")
    return lines


def _fit(text: str, width: int) -> str:
    chars = max(4, width // 6)
    return text if len(text) <= chars else text[: chars - 1] + "…"


def grid_image(rows: list[dict], images: list[list], index=None, cell: int = 96):
    """One prompt's grid as a PIL image."""
    from PIL import Image, ImageDraw

    with_ref = index is not None
    pair = cell * 2 if with_ref else cell
    label_w, caption_h = max(110, cell), 3 * LINE + 6
    ncols = max(len(r) for r in images)
    sheet = Image.new("RGB", (label_w + ncols * (pair + 4), len(rows) * (cell + caption_h)), "white")
    draw = ImageDraw.Draw(sheet)
    refs: dict[int, object] = {}
    for r, (row, imgs) in enumerate(zip(rows, images)):
        top = r * (cell + caption_h)
        for i, line in enumerate(_label(row)):
            draw.text((4, top + 4 + i * LINE), _fit(line, label_w), fill="black")
        for c, img in enumerate(imgs):
            left = label_w + c * (pair + 4)
            sheet.paste(fit_cell(img, cell), (left, top))
            caption = [_fit(row["text"], pair), f"seed {row['seeds'][c]}"]
            if with_ref:
                near = row["nearest"][c][0]
                if near["row"] not in refs:
                    refs[near["row"]] = index.image(near["row"])
                sheet.paste(fit_cell(refs[near["row"]], cell), (left + cell, top))
                dup = " DUPLICATE" if near["similarity"] >= row["duplicates"]["threshold"] else ""
                caption.append(f"ref {near['similarity']:.3f}{dup}")
            for i, line in enumerate(caption):
                draw.text((left + 2, top + cell + 2 + i * LINE), line, fill="red" if "DUPLICATE" in line else "black")
    return sheet


def write_html(out: Path, report: dict, index=None) -> Path:
    """index.html: per prompt its grid PNG, then a table of every render (and its nearest reference)."""
    refs_dir = out / "references"
    parts = ["<!doctype html><meta charset='utf-8'><title>sd-bridge sweep</title>",
             "<style>body{font-family:sans-serif} td{vertical-align:top;font-size:12px} img.r{width:96px;"
             "image-rendering:pixelated} .dup{color:#b00;font-weight:bold}</style>",
             f"<h1>sweep: {report['prompts']} prompt(s)</h1>",
             f"<p>source {html.escape(report['source']['name'])}, target {html.escape(report['target']['name'])}, "
             f"scorer {html.escape(report['scorer']['name'])}; breadth = mean pairwise distance (1 - cosine) "
             f"across seeds, clusters at distance {report['cluster_threshold']}</p>"]
    by_prompt: dict[int, list[dict]] = {}
    for row in report["rows"]:
        by_prompt.setdefault(row["prompt_index"], []).append(row)
    for k, rows in sorted(by_prompt.items()):
        parts.append(f"<h2>{html.escape(rows[0]['prompt'])}</h2><p><a href='{report['grids'][k]}'>grid PNG</a></p>"
                     "<table>")
        for row in rows:
            b = row["breadth"]
            interval = f" [{b['ci95'][0]:.3f}, {b['ci95'][1]:.3f}]" if b["seeds"] > 2 else ""
            ratio = f"<br>ratio to source {row['breadth_ratio']:.2f}" if row.get("breadth_ratio") is not None else ""
            plural = "s" if b["clusters"] != 1 else ""
            label = (f"<b>{html.escape(row['strategy'])}</b><br>{html.escape(row['model'])}<br>"
                     f"breadth {b['mean_distance']:.3f}{interval}<br>{b['clusters']} cluster{plural}{ratio}"
                     if b["seeds"] > 1 else f"<b>{html.escape(row['strategy'])}</b>")
            cells = [f"<td>{label}<br><i>{html.escape(row['text'])}</i></td>"]
            for c, (seed, file) in enumerate(zip(row["seeds"], row["files"])):
                cell = f"<img class='r' src='{file}' alt='seed {seed}'><br>seed {seed}"
                if "nearest" in row:
                    near = row["nearest"][c][0]
                    ref = _reference_file(refs_dir, index, near["row"])
                    dup = near["similarity"] >= row["duplicates"]["threshold"]
                    cell += (f"<br><img class='r' src='references/{ref}' alt='nearest reference'>"
                             f"<br><span class='{'dup' if dup else ''}'>{near['similarity']:.3f}"
                             f"{' duplicate' if dup else ''}</span><br>{html.escape(near['path'])}")
                cells.append(f"<td>{cell}</td>")
            parts.append("<tr>" + "".join(cells) + "</tr>")
        parts.append("</table>")
    path = out / "index.html"
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return path


def _reference_file(refs_dir: Path, index, row: int) -> str:
    """The nearest reference's image, copied (as PNG) beside the page so it opens without the collection."""
    name = f"ref-{row}.png"
    if not (refs_dir / name).exists():
        refs_dir.mkdir(parents=True, exist_ok=True)
        src = index.meta["source"]
        if src["kind"] == "folder" and index.paths[row].lower().endswith(".png"):
            shutil.copyfile(Path(src["root"]) / index.paths[row], refs_dir / name)
        else:
            index.image(row).save(refs_dir / name)
    return name

"""Writing the eval report: report.json (machine-readable), report.md, a self-contained report.html
(tables, plots and image grids embedded as data URIs) and the plots as PNG files."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path


def _png_bytes(image, size: int = 192) -> bytes:
    from PIL import Image

    img = image.convert("RGB")
    if img.width < size:  # tiny-model images: enlarge with visible pixels
        img = img.resize((size, size), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def plots(report: dict, out: Path) -> dict[str, Path]:
    """agreement.png (distribution per strategy) and deltas.png (paired deltas vs identity)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def boxplot(path: Path, labels: list[str], values: list[list[float]], ylabel: str, title: str,
                zero_line: bool = False) -> Path:
        fig, ax = plt.subplots(figsize=(max(4, 1.6 * max(1, len(labels))), 3.2))
        if labels:
            ax.boxplot(values, showmeans=True)
            ax.set_xticks(range(1, len(labels) + 1), labels, rotation=15, fontsize=8)
        if zero_line:
            ax.axhline(0, color="grey", lw=0.8)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path

    names = list(report["strategies"])
    agreement = {n: [r["strategies"][n]["agreement"] for r in report["rows"]] for n in names}
    others = [n for n in names if n != "identity"]
    return {
        "agreement": boxplot(out / "agreement.png", names, [agreement[n] for n in names], "agreement (cosine)",
                             "Image agreement with the source, per strategy"),
        "deltas": boxplot(out / "deltas.png", others,
                          [[a - b for a, b in zip(agreement[n], agreement["identity"])] for n in others],
                          "agreement - identity", "Paired delta against identity", zero_line=True),
    }


def _table_rows(report: dict) -> list[list[str]]:
    rows = []
    for name, a in report["strategies"].items():
        v = a["vs_identity"]
        rows.append([name, f"{a['agreement_mean']:.4f}", f"[{a['agreement_ci95'][0]:.4f}, {a['agreement_ci95'][1]:.4f}]",
                     f"{v['delta_mean']:+.4f}", f"{v['win']:.0%} / {v['tie']:.0%} / {v['loss']:.0%}",
                     f"{a['text_score_mean']:.4f}", f"{a['tokens_mean']:.1f}", f"{a['length_mean']:.0f}",
                     str(len(a["regressions"])), str(a.get("fallbacks", 0)), *_faithful(a), _ratio(a)]
                    + ([_dup(a["duplicates"])] if "duplicates" in a else [])
                    + ([_gap(a.get("gap_recovered"), a.get("gap_recovered_ci95"))] if _has_oracle(report) else []))
    return rows


def _faithful(a: dict) -> list[str]:
    f = a.get("faithfulness")
    if f is None:
        return ["", "", ""]
    return [f"{f['words_kept']:.1%}", f"{f['words_invented_per_prompt']:.2f}", str(f["guard_rejections"])]


def _rejected(report: dict) -> list[tuple[str, list[dict]]]:
    """(strategy, its rewrites the faithfulness guard refused) for every strategy with any."""
    return [(name, a["faithfulness"]["rejected"]) for name, a in report["strategies"].items()
            if a.get("faithfulness", {}).get("rejected")]


def _ratio(a: dict) -> str:
    if a.get("breadth_ratio") is None:
        return "n/a (1 seed)"
    lo, hi = a["breadth_ratio_ci95"]
    return f"{a['breadth_ratio']:.2f} [{lo:.2f}, {hi:.2f}]"


def _dup(d: dict) -> str:
    return f"{d['duplicate_fraction']:.0%} ({d['duplicates']}/{d['renders']})" if d["renders"] else ""


def _has_oracle(report: dict) -> bool:
    return "oracle" in report["strategies"]


def _gap(fraction, ci) -> str:
    if fraction is None:
        return ""
    return f"{fraction:.0%}" + (f" [{ci[0]:.0%}, {ci[1]:.0%}]" if ci and ci[0] is not None else "")


def _drift_rows(report: dict) -> list[list[str]]:
    """Toy-world prompts only: per drift and strategy, Δ vs identity and the share of the oracle's gap."""
    rows = []
    for name, a in report["strategies"].items():
        for drift, d in a.get("by_drift", {}).items():
            rows.append([drift, name, str(d["prompts"]), f"{d['agreement_mean']:.4f}", f"{d['delta_mean']:+.4f}",
                         f"[{d['delta_ci95'][0]:+.4f}, {d['delta_ci95'][1]:+.4f}]", f"{d['win']:.0%}",
                         _gap(d.get("gap_recovered"), d.get("gap_recovered_ci95"))])
    return sorted(rows, key=lambda r: r[0])


HEADER = ["strategy", "agreement", "95% CI", "Δ vs identity", "win / tie / loss", "text–image", "tokens", "chars",
          "regressions", "fallbacks", "words kept", "words invented / prompt", "guard rejections",
          "breadth ratio [95% CI]"]
GAP = "oracle gap recovered [95% CI]"
DRIFT_HEADER = ["drift", "strategy", "prompts", "agreement", "Δ vs identity", "95% CI", "win", GAP]


DUP = "duplicates of the reference"


def _header(report: dict) -> list[str]:
    dup = any("duplicates" in a for a in report["strategies"].values())
    return HEADER + ([DUP] if dup else []) + ([GAP] if _has_oracle(report) else [])


def markdown(report: dict) -> str:
    lines = [f"# sd-bridge eval: {report['source']['name']} → {report['target']['name']}", "",
             f"{report['prompts']} prompts × {report['seeds']} seeds, scorer `{report['scorer']['name']}`. Agreement = "
             "cosine of scorer image embeddings, target render vs source render at the same seed, mean over seeds. "
             "Breadth ratio = mean pairwise distance of a prompt's target renders across seeds ÷ the source's "
             "(below 1: the target draws fewer looks than the source).", "",
             "| " + " | ".join(_header(report)) + " |", "|" + "---|" * len(_header(report))]
    lines += ["| " + " | ".join(r) + " |" for r in _table_rows(report)]
    drift_rows = _drift_rows(report)
    if drift_rows:
        lines += ["", "## By toy-world drift", "", "| " + " | ".join(DRIFT_HEADER) + " |", "|" + "---|" * len(DRIFT_HEADER)]
        lines += ["| " + " | ".join(r) + " |" for r in drift_rows]
    lines += ["", "![agreement](agreement.png) ![deltas](deltas.png)", ""]
    for name, path in report.get("learning_curves", {}).items():
        lines += [f"## Learning curves: {name}", "", f"![learning curves of {name}]({Path(path).name})", ""]
    for name, a in report["strategies"].items():
        if a["regressions"]:
            lines += [f"## Regressions: {name}", ""]
            lines += [f"- {r['delta']:+.4f}: {r['prompt'][:120]}" for r in a["regressions"][:20]]
            lines.append("")
    for name, rejected in _rejected(report):
        lines += [f"## Rejected by the faithfulness guard: {name}", "",
                  "The syntax strategy's output was used for these prompts instead of the adapter's rewrite.", ""]
        lines += [f"- `{r['prompt'][:120]}` → `{(r['rewrite'] or '')[:120]}`: {r['message']}"
                  for r in rejected[:50]]
        lines.append("")
    return "\n".join(lines)


def html_report(report: dict, grids: list[dict], plot_paths: dict[str, Path]) -> str:
    esc = html.escape
    table = "<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in _header(report)) + "</tr>"
    table += "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in _table_rows(report))
    table += "</table>"
    drift_rows = _drift_rows(report)
    if drift_rows:
        table += "<h2>By toy-world drift</h2><table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in DRIFT_HEADER) + "</tr>"
        table += "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in drift_rows)
        table += "</table>"
    imgs = "".join(f'<img class="plot" alt="{esc(k)}" src="{_data_uri(p.read_bytes())}">' for k, p in plot_paths.items())
    curves = "".join(f'<h2>Learning curves: {esc(name)}</h2><img class="plot" alt="learning curves of {esc(name)}" '
                     f'src="{_data_uri(Path(path).read_bytes())}">' for name, path in report.get("learning_curves", {}).items())
    grid_html = []
    for g in grids:
        cells = "".join(
            f'<figure><img alt="{esc(name)}" src="{_data_uri(_png_bytes(image))}"><figcaption><b>{esc(name)}</b><br>'
            f"{esc(text)}</figcaption></figure>" for name, text, image in g["cells"])
        grid_html.append(f'<div class="grid"><p class="seed">seed {g["seed"]}</p>{cells}</div>')
    regress = []
    for name, a in report["strategies"].items():
        if a["regressions"]:
            items = "".join(f"<li>{r['delta']:+.4f}: {esc(r['prompt'][:200])}</li>" for r in a["regressions"][:20])
            regress.append(f"<h3>{esc(name)}</h3><ul>{items}</ul>")
    refused = "".join(
        f"<h3>{esc(name)}</h3><ul>" + "".join(f"<li><code>{esc(r['prompt'][:200])}</code> → <code>"
                                              f"{esc((r['rewrite'] or '')[:200])}</code>: {esc(r['message'])}</li>"
                                              for r in rejected[:50]) + "</ul>"
        for name, rejected in _rejected(report))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>sd-bridge eval report</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }} td, th {{ border: 1px solid #ccc; padding: 4px 8px; font-size: 13px; }}
.plot {{ max-width: 48%; margin-right: 1%; }}
.grid {{ display: flex; flex-wrap: wrap; gap: 8px; border-top: 1px solid #ddd; padding: 8px 0; }}
figure {{ width: 192px; margin: 0; }} figure img {{ width: 192px; height: 192px; image-rendering: pixelated; }}
figcaption {{ font-size: 11px; word-wrap: break-word; }} .seed {{ width: 100%; margin: 0; color: #666; font-size: 12px; }}
</style></head><body>
<h1>sd-bridge eval: {esc(report['source']['name'])} → {esc(report['target']['name'])}</h1>
<p>{report['prompts']} prompts × {report['seeds']} seeds, scorer <code>{esc(report['scorer']['name'])}</code>. Agreement is the
cosine of scorer image embeddings, target render vs source render at the same seed, averaged over seeds; the interval is a
95% bootstrap interval of the mean; Δ, win/tie/loss are paired against <i>identity</i> (the source prompt given to the target).</p>
{table}
<div>{imgs}</div>
{curves}
<h2>Side by side: source | strategies</h2>
{''.join(grid_html)}
<h2>Regressions</h2>
{''.join(regress) or '<p>none</p>'}
<h2>Rejected by the faithfulness guard</h2>
{refused or '<p>none</p>'}
</body></html>
"""


def write_report(report: dict, grids: list[dict], out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    plot_paths = plots(report, out)
    paths = {"json": out / "report.json", "md": out / "report.md", "html": out / "report.html", **plot_paths}
    paths["json"].write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    paths["md"].write_text(markdown(report) + "\n", encoding="utf-8")
    paths["html"].write_text(html_report(report, grids, plot_paths), encoding="utf-8")
    return paths

"""One self-contained HTML page for a results folder (reads files only, never live objects).

:func:`write_html_report` collects what a results folder holds -- a ``reproduce`` folder,
a sweep, a line search -- into ``report.html``:

- the profile's name and settings (``profile.yaml``) or the sweep's grid (``sweep.yaml``);
- every Markdown table file at the top level (``table.md``, ...), rendered as HTML;
- every PNG and GIF below the folder (Fig. 4, Fig. 5, traversals, curves), embedded as
  ``data:`` URIs so the page works offline and alone;
- every run's numbers with the settings and library versions they were computed with
  (each ``metrics.json``: its scalars, ``settings_of`` and ``versions``), one collapsible
  entry per run.

Exported datasets (``datasets/``) and hidden files are skipped.
"""

from __future__ import annotations

import base64
import html
import json
import os
import time
from pathlib import Path

from vaebias._internal.errors import RunError
from vaebias._internal.io import atomic_path, read_checked

__all__ = ["write_html_report"]

_MIME = {".png": "image/png", ".gif": "image/gif"}
_SKIP_DIRS = {"datasets"}


def _visible_files(out: Path, suffixes) -> list[Path]:
    files = []
    for p in sorted(out.rglob("*")):
        rel = p.relative_to(out)
        if any(part.startswith(".") or part in _SKIP_DIRS for part in rel.parts):
            continue
        if p.is_file() and p.suffix.lower() in suffixes:
            files.append(p)
    return files


def _scalars(result: dict) -> str:
    vals = [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in result.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return ", ".join(vals)


def write_html_report(out: str | os.PathLike, *, title: str | None = None) -> Path:
    """Write ``out/report.html`` (atomically) from the files under ``out``.

    Args:
        out: a results folder (``vaebias reproduce``, ``vaebias sweep`` or any folder of
            run directories).
        title: the page's title (default: the folder's name).

    Returns:
        the path written.

    Raises:
        RunError: ``out`` is not a folder, or holds no table, figure or evaluated run.
    """
    import markdown

    out = Path(out)
    if not out.is_dir():
        raise RunError(f"{str(out)!r} is not a folder")
    tables = sorted(p for p in out.glob("*.md") if p.is_file())
    figures = [p for p in _visible_files(out, _MIME) if p.name != "report.html"]
    runs = _visible_files(out, {".json"})
    runs = [p for p in runs if p.name == "metrics.json" or p.name.startswith("metrics_on_")]
    if not (tables or figures or runs):
        raise RunError(f"{str(out)!r} is not a results folder: it holds no table, figure or evaluated run to report")

    def e(text: str) -> str:  # text content (attributes below are escaped with quotes)
        return html.escape(text, quote=False)

    body = [f"<h1>{e(title or out.resolve().name)}</h1>",
            (f"<p class='meta'>vaebias report of <code>{e(str(out))}</code>, written "
             f"{e(time.strftime('%Y-%m-%d %H:%M'))}.</p>")]
    if (out / "profile.yaml").exists():
        spec = read_checked(out / "profile.yaml", dict, "the settings of a reproduction")
        prof = spec.get("profile", {})
        body.append(f"<h2>Profile <code>{e(str(prof.get('name', '?')))}</code> on "
                    f"<code>{e(str(spec.get('dataset', '?')))}</code></h2>")
        if prof.get("reduced", False):
            body.append("<p class='warn'>A REDUCED protocol (fewer steps, seeds or smaller networks than the "
                        "paper's): compare its numbers with the paper's Table 1 only as the profile's page "
                        "says.</p>")
        expected = [f"runs/{v}/{m}_seed{s}" for v in ("original", "modified", "noise")
                    for m in prof.get("models", []) for s in prof.get("seeds", [])]
        missing = [r for r in expected if not (out / r / "metrics.json").exists()]
        if missing:
            body.append(f"<p class='warn'>{len(missing)} of the profile's {len(expected)} table runs are missing "
                        f"(not finished or not evaluated), e.g. <code>{e(missing[0])}</code>: the table "
                        f"averages fewer seeds. Rerun the same <code>vaebias reproduce</code> command to "
                        f"finish them.</p>")
        body.append(f"<details><summary>profile settings</summary><pre>{e(json.dumps(spec, indent=1))}"
                    f"</pre></details>")
    if (out / "sweep.yaml").exists():
        body.append("<h2>Sweep grid</h2><pre>" + e((out / "sweep.yaml").read_text()) + "</pre>")
    for t in tables:
        body.append(f"<h2>{e(t.name)}</h2>")
        body.append(markdown.markdown(t.read_text(), extensions=["tables"]))
    if figures:
        body.append("<h2>Figures</h2>")
        for f in figures:
            data = base64.b64encode(f.read_bytes()).decode("ascii")
            rel = f.relative_to(out)
            body.append(f"<figure><img alt='{html.escape(str(rel))}' src='data:{_MIME[f.suffix.lower()]};base64,{data}'>"
                        f"<figcaption>{e(str(rel))}</figcaption></figure>")
    if runs:
        body.append(f"<h2>Runs ({len(runs)}): numbers, their settings and library versions</h2>")
        for m in runs:
            rec = read_checked(m, dict, "a run's metrics")
            rel = m.parent.relative_to(out)
            results = {k: v for k, v in rec.items()
                       if isinstance(v, dict) and k not in ("settings", "settings_of", "versions")}
            line = "; ".join(f"{k}: {_scalars(v)}" for k, v in results.items())
            detail = {"model": rec.get("model"), "file": str(m.relative_to(out)),
                      "settings_of": rec.get("settings_of", {"all": rec.get("settings")}),
                      "versions": rec.get("versions")}
            body.append(f"<details><summary><code>{e(str(rel))}</code> {e(line)}</summary>"
                        f"<pre>{e(json.dumps(detail, indent=1, default=str))}</pre></details>")
    page = ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{e(title or out.resolve().name)}</title><style>"
            "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
            "table{border-collapse:collapse}td,th{border:1px solid #bbb;padding:3px 8px}"
            "img{max-width:100%}figure{margin:1em 0}pre{background:#f4f4f4;padding:.5em;overflow:auto}"
            ".warn{color:#a00}.meta{color:#666}summary{cursor:pointer}"
            "</style></head><body>" + "\n".join(body) + "</body></html>\n")
    path = out / "report.html"
    with atomic_path(path, suffix=".html") as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path

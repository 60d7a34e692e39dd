"""The report page itself: one self-contained HTML file (styles and charts inline) whose only links are the
images beside it, relative, so it opens from the folder, a copy of it, or a bucket, with no server.

    summary ─ stages (table, throughput and replica charts) ─ kept clips by video ─ duplicate groups
        ─ filtered clips by reason ─ failures ─ provenance ─ warnings

Every kept clip appears once, as an animated preview (`img.thumb`); a duplicate appears in its group, a
filtered clip under its reasons, each as a still from its source video or, failing that, a text tile.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from html import escape
from typing import Any
from urllib.parse import quote

from orchestrator.report.inputs import ClipRow, ReportInput
from orchestrator.report.plots import line_chart, palette, throughput
from orchestrator.report.thumbs import MAX_IMAGES, Thumbnails

MAX_TILES = 400
"""Clips shown per group (a video's kept clips, a reason, a duplicate group); the rest are counted."""
STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0 24px 40px;color:#222;background:#fafafa}
h1{margin:18px 0 4px}h2{margin-top:32px;border-bottom:1px solid #ccc}h3{margin:18px 0 6px;font-size:15px}
nav a{margin-right:14px}.summary{font-size:15px}.empty,.more{color:#666;font-style:italic}
.grid{display:flex;flex-wrap:wrap;gap:10px}
figure{margin:0;width:200px;background:#fff;border:1px solid #ddd;border-radius:4px;padding:4px}
figure.filtered{background:#f4f0f0}figure img{width:192px;display:block}
figcaption{font-size:12px;color:#444;word-break:break-all}
.tile{width:192px;height:108px;display:flex;align-items:center;justify-content:center;text-align:center;
 background:#e6dede;color:#633;font-size:12px}
img.missing{height:108px;border:1px dashed #c33}
.error{color:#a22;display:block;max-height:4.2em;overflow:hidden}
.badge{display:inline-block;background:#fde8c8;border-radius:3px;padding:0 4px;margin-top:2px}
table{border-collapse:collapse;margin:8px 0;background:#fff}td,th{border:1px solid #ddd;padding:3px 8px;
 text-align:left;vertical-align:top}td.n{text-align:right}code{font-size:12px}
figure.chart{width:auto;display:inline-block;margin:6px 12px 6px 0}figure.chart figcaption{font-size:13px;
 font-weight:600;color:#222;padding:2px 4px}
.axis{stroke:#444}.gridline{stroke:#eee}.tick,.legend,.label{font-size:11px;fill:#333}.label{text-anchor:middle}
"""
ON_BROKEN = "this.className='missing';this.alt='preview missing'"
"""A preview that fails to load (the page copied without its report_files/ folder) shows as a marked box."""


def render(report: ReportInput, thumbs: Thumbnails) -> str:
    """The whole page; makes (or reuses) the images it shows."""
    rows = report.rows
    kept = [r for r in rows if r.kept]
    duplicates = [r for r in rows if r.duplicate_of]  # marked only (`filter: false`), they are kept clips too
    # a video's own row (it failed before it had a clip) is a failure, shown with the failures, not a clip
    filtered = [r for r in rows if not r.kept and not r.duplicate_of and r.clip_index is not None]
    sections = [
        ("stages", "Stages", _stages(report.run)),
        ("kept", f"Kept clips ({len(kept)})", _kept(kept, duplicates, thumbs)),
        ("duplicates", f"Duplicate groups ({len({r.duplicate_of for r in duplicates})})",
         _duplicate_groups(duplicates, thumbs)),
        ("filtered", f"Filtered clips ({len(filtered)})", _filtered(filtered, thumbs)),
        ("failures", f"Failures ({len(report.run.get('failures') or [])})", _failures(report.run)),
        ("provenance", "Provenance", _provenance(report)),
        ("warnings", "Warnings", _warnings(report.run)),
    ]
    capped = (f'<p class="more">{thumbs.over_budget} clips are shown without a picture: a report makes at most '
              f"{MAX_IMAGES} images.</p>" if thumbs.over_budget else "")
    nav = "".join(f'<a href="#{key}">{escape(title)}</a>' for key, title, _ in sections)
    body = "".join(f'<section id="{key}"><h2>{escape(title)}</h2>{content}</section>'
                   for key, title, content in sections)
    title = f"Report: {report.out_dir.name}"
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f"<style>{STYLE}</style></head><body><header><h1>{escape(title)}</h1>"
            f'<p class="summary">{_summary(report, kept, duplicates, filtered)}</p>{capped}<nav>{nav}</nav></header>'
            f"{body}</body></html>\n")


def _summary(report: ReportInput, kept: list[ClipRow], duplicates: list[ClipRow], filtered: list[ClipRow]) -> str:
    run = report.run
    videos = (f"{run['videos_done']}/{run['videos']} videos" if "videos" in run
              else f"{len({row.video for row in report.rows})} videos")
    wall = f" in {run['wall_s']:.1f} s" if isinstance(run.get("wall_s"), int | float) else ""
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return escape(f"{videos}, {len(report.rows)} clips: {len(kept)} kept, {len(filtered)} filtered, "
                  f"{len(duplicates)} duplicates; {len(run.get('failures') or [])} failures in the last run{wall}. "
                  f"Written {stamp} from {report.out_dir}.")


def _stages(run: dict[str, Any]) -> str:
    stages = run.get("stages") or {}
    if not stages:
        return '<p class="empty">No run.json: the stages of the last run are unknown.</p>'
    columns = ("items", "failed", "items_per_s", "replicas", "worker_restarts", "retried", "poisoned")
    head = "".join(f"<th>{c.replace('_', ' ')}</th>" for c in columns)
    body = "".join(f"<tr><th>{escape(name)}</th>" + "".join(f'<td class="n">{escape(str(s.get(c, "")))}</td>'
                                                           for c in columns) + "</tr>"
                   for name, s in stages.items())
    timeline = run.get("timeline") or {}
    t, done, replicas = timeline.get("t") or [], timeline.get("done") or {}, timeline.get("replicas") or {}
    colours = palette(list(done))
    charts = (line_chart("Throughput: items per second, per stage", t, throughput(t, done), colours)
              + line_chart("Replicas up, per model stage", t,
                           {name: values for name, values in replicas.items() if any(values)}, colours, steps=True))
    return f"<table><tr><th>stage</th>{head}</tr>{body}</table>{charts}"


def _kept(kept: list[ClipRow], duplicates: list[ClipRow], thumbs: Thumbnails) -> str:
    if not kept:
        return '<p class="empty">No clip was kept.</p>'
    copies = defaultdict(int)
    for row in duplicates:
        copies[row.duplicate_of] += 1
    return "".join(f"<h3>{escape(video)}</h3>" + _grid(rows, lambda r: _kept_tile(r, copies[r.clip_id], thumbs))
                   for video, rows in _by(kept, lambda r: r.video))


def _kept_tile(row: ClipRow, copies: int, thumbs: Thumbnails) -> str:
    src = thumbs.preview(row)
    picture = (f'<img class="thumb" data-clip="{escape(row.clip_id)}" src="{quote(src)}" alt="{escape(row.clip_id)}" '
               f'loading="lazy" onerror="{ON_BROKEN}">' if src else
               f'<div class="tile">{escape(row.span())}<br>no preview</div>')
    badge = (f'<br><a class="badge" href="#dup-{escape(row.clip_id)}">{copies} duplicate{"s" * (copies > 1)}</a>'
             if copies else "")
    return (f'<figure class="clip kept" id="clip-{escape(row.clip_id)}">{picture}<figcaption>'
            f'<a href="{quote(row.path or "")}">{escape(row.clip_id)}</a><br>{escape(row.span())}{badge}'
            f"</figcaption></figure>")


def _duplicate_groups(duplicates: list[ClipRow], thumbs: Thumbnails) -> str:
    if not duplicates:
        return '<p class="empty">No duplicates marked (no dedup stage, or none found).</p>'
    return "".join(f'<h3 id="dup-{escape(str(original))}">duplicates of <a href="#clip-{escape(str(original))}">'
                   f"{escape(str(original))}</a> ({len(rows)})</h3>"
                   + _grid(rows, lambda r: _filtered_tile(r, thumbs))
                   for original, rows in _by(duplicates, lambda r: r.duplicate_of))


def _filtered(filtered: list[ClipRow], thumbs: Thumbnails) -> str:
    if not filtered:
        return '<p class="empty">No clip was filtered.</p>'
    return "".join(f"<h3>{escape(reason)} ({len(rows)})</h3>" + _grid(rows, lambda r: _filtered_tile(r, thumbs))
                   for reason, rows in _by(filtered, lambda r: " + ".join(r.filtered_by) or "no clip file"))


def _filtered_tile(row: ClipRow, thumbs: Thumbnails) -> str:
    why = " + ".join(row.filtered_by) or "not kept"
    detail = "; ".join(row.errors)
    src = thumbs.source_still(row)
    picture = (f'<img class="still" src="{quote(src)}" alt="{escape(row.clip_id)} (from its source video)" '
               f'loading="lazy" onerror="{ON_BROKEN}">' if src else
               f'<div class="tile">{escape(row.span())}<br>{escape(why)}</div>')
    error = f'<br><span class="error">{escape(detail)}</span>' if detail else ""
    return (f'<figure class="clip filtered" title="{escape(detail or why)}">{picture}<figcaption>'
            f"{escape(row.clip_id)}<br>{escape(row.span())} · {escape(why)}{error}</figcaption></figure>")


def _grid(rows: list[ClipRow], tile: Callable[[ClipRow], str]) -> str:
    more = f'<p class="more">and {len(rows) - MAX_TILES} more (see metadata.jsonl)</p>' if rows[MAX_TILES:] else ""
    return '<div class="grid">' + "".join(tile(row) for row in rows[:MAX_TILES]) + "</div>" + more


def _by(rows: Iterable[ClipRow], key: Callable[[ClipRow], Any]) -> list[tuple[Any, list[ClipRow]]]:
    """Rows grouped by `key`, groups in the order their first row comes."""
    groups: dict[Any, list[ClipRow]] = {}
    for row in rows:
        groups.setdefault(key(row), []).append(row)
    return list(groups.items())


def _failures(run: dict[str, Any]) -> str:
    failures = [f for f in run.get("failures") or [] if isinstance(f, dict)]
    if not failures:
        return '<p class="empty">The last run had no failures.</p>'
    head = "<tr><th>video</th><th>clip</th><th>stage</th><th>reason</th></tr>"
    body = "".join('<tr class="failure">' + "".join(f"<td>{escape(cell)}</td>" for cell in (
        str(f.get("video") or "the run"), "" if f.get("clip_index") is None else str(f["clip_index"]),
        str(f.get("stage") or ""), str(f.get("reason", "")))) + "</tr>" for f in failures)
    return f"<table>{head}{body}</table>"


def _provenance(report: ReportInput) -> str:
    if not report.provenance:
        return '<p class="empty">This folder records no provenance.</p>'
    uses = defaultdict(int)
    for row in report.rows:
        uses[row.provenance] += 1
    fields = sorted({key for record in report.provenance for stage in record.stages.values() for key in stage})
    head = "<tr><th>id</th><th>rows</th><th>stage</th>" + "".join(f"<th>{escape(f)}</th>" for f in fields) + "</tr>"
    body = ""
    for record in report.provenance:
        for stage, values in record.stages.items() or [("", {})]:
            cells = "".join(f"<td><code>{escape(_shown(values.get(f)))}</code></td>" for f in fields)
            body += (f"<tr><td><code>{escape(record.id)}</code></td><td class=\"n\">{uses[record.id]}</td>"
                     f"<td>{escape(stage)}</td>{cells}</tr>")
    return f"<table>{head}{body}</table>"


def _shown(value: Any) -> str:
    return "" if value is None else value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _warnings(run: dict[str, Any]) -> str:
    warnings = run.get("warnings") or []
    if not warnings:
        return '<p class="empty">None.</p>'
    return "<ul>" + "".join(f"<li>{escape(json.dumps(w, sort_keys=True))}</li>" for w in warnings) + "</ul>"

"""``cxbench browse RUN``: a static HTML page per task log, to read what a model did sample by sample.

Each card shows the image(s) (prior and current side by side) with ground-truth boxes (green)
and predicted boxes (red) drawn over them, the question, the model's full output split into
its think/answer steps, the parsed answer, the target and the per-sample scores. Buttons
filter correct / incorrect samples (correct: the task's primary per-sample score >= 0.5).

Everything a model or a data file wrote is HTML-escaped; images are embedded as small JPEG
thumbnails, so a page is self-contained.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path
from typing import Any

from cxbench.parsing import split_reasoning
from cxbench.results import atomic_write_text

THUMB = 320


def _thumbnail(path: str) -> str | None:
    """A base64 JPEG data URL of the image, or None when it cannot be read."""
    from cxbench.images import load_image

    try:
        image = load_image(path).convert("L")  # PNG/JPEG/DICOM, as the models see it
        image.thumbnail((THUMB, THUMB))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=80)
    except Exception:
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def _boxes(value: Any) -> list[list[float]]:
    """Boxes in a target/parsed value: one box, a list of boxes, or none.

    Only finite numbers are drawn (values come from log files: text there must never reach the SVG).
    """

    def is_box(box: Any) -> bool:
        return (
            isinstance(box, list)
            and len(box) == 4
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in box)
        )

    if is_box(value):
        return [[float(v) for v in value]]
    if isinstance(value, list):
        return [[float(v) for v in box] for box in value if is_box(box)]
    return []


def _svg(boxes: list[list[float]], colour: str) -> str:
    return "".join(
        f'<rect x="{b[0] * 100:.2f}%" y="{b[1] * 100:.2f}%" width="{(b[2] - b[0]) * 100:.2f}%" '
        f'height="{(b[3] - b[1]) * 100:.2f}%" fill="none" stroke="{colour}" stroke-width="2"/>'
        for b in boxes
    )


def _card(row: dict[str, Any], primary: str) -> str:
    esc = html.escape
    sample = row.get("sample") or {}
    score = (row.get("scores") or {}).get(primary)
    correct = score is not None and score >= 0.5
    images = []
    gold, pred = _boxes(sample.get("target")), _boxes(row.get("parsed"))
    paths = sample.get("images") or []
    for i, path in enumerate(paths):
        label = ("prior" if i == 0 else "current") if len(paths) == 2 else "image"
        src = _thumbnail(path)
        if src is None:
            images.append(f'<div class="img missing">{esc(label)}: cannot read {esc(path)}</div>')
            continue
        overlay = _svg(gold, "#2ca02c") + _svg(pred, "#d62728") if i == len(paths) - 1 else ""
        images.append(
            f'<div class="img"><img src="{src}" alt="{esc(label)}"><svg>{overlay}</svg>'
            f"<small>{esc(label)}</small></div>"
        )
    reasoning = split_reasoning(row.get("raw_output") or "")
    if reasoning.steps:
        steps = "".join(
            f'<div class="think">{esc(t)}</div><div class="answer">{esc(a)}</div>' for t, a in reasoning.steps
        )
    else:
        steps = f'<div class="answer">{esc(row.get("raw_output") or "")}</div>'
    scores = ", ".join(
        f"{esc(k)}={v:.3f}" if isinstance(v, (int, float)) else f"{esc(k)}=–"
        for k, v in (row.get("scores") or {}).items()
    )
    error = (
        f'<p class="error">{esc(str(row.get("error")))}: {esc(str(row.get("error_message")))}</p>'
        if row.get("error")
        else ""
    )
    choices = "".join(f"<li>{esc(str(c))}</li>" for c in sample.get("choices") or [])
    return f"""<div class="card {"correct" if correct else "incorrect"}">
<h3>{esc(str(row.get("sample_id")))} <span>{"✔" if correct else "✘"}</span></h3>
<div class="images">{"".join(images)}</div>
<p class="q">{esc(str(sample.get("question", "")))}</p>{f'<ol type="A">{choices}</ol>' if choices else ""}
<details open><summary>model output</summary>{steps}</details>
<p><b>parsed:</b> {esc(json.dumps(row.get("parsed"), ensure_ascii=False))}<br>
<b>target:</b> {esc(json.dumps(sample.get("target"), ensure_ascii=False))}<br>
<b>scores:</b> {scores}</p>{error}
</div>"""


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }}
.card {{ border: 1px solid #ccc; border-radius: 6px; padding: 10px; margin: 10px 0; }}
.card.correct h3 span {{ color: #2ca02c; }} .card.incorrect h3 span {{ color: #d62728; }}
.images {{ display: flex; gap: 10px; }} .img {{ position: relative; display: inline-block; }}
.img img {{ display: block; width: {thumb}px; }} .img svg {{ position: absolute; left: 0; top: 0;
 width: {thumb}px; height: {thumb}px; }}
.think {{ background: #f3f0ff; padding: 4px 8px; white-space: pre-wrap; }}
.answer {{ background: #eefaf0; padding: 4px 8px; white-space: pre-wrap; margin-bottom: 4px; }}
.error {{ color: #d62728; }} body.hide-correct .correct, body.hide-incorrect .incorrect {{ display: none; }}
</style></head><body>
<h1>{title}</h1>
<p>{summary}</p>
<p><button onclick="document.body.className=''">all</button>
<button onclick="document.body.className='hide-incorrect'">correct only</button>
<button onclick="document.body.className='hide-correct'">incorrect only</button></p>
{cards}
</body></html>
"""


def browse_log(log: str | Path, output: str | Path | None = None) -> Path:
    """Write the HTML page of one ``*.samples.jsonl`` log; returns its path."""
    log = Path(log)
    rows, header = [], {}
    with log.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise ValueError(f"{log}:{line_no}: not a JSON line") from None
            if "header" in record:
                header = record["header"]
            else:
                rows.append(record)
    result_path = log.with_name(log.name.replace(".samples.jsonl", ".json"))
    primary = None
    if result_path.is_file():
        primary = json.loads(result_path.read_text(encoding="utf-8")).get("primary_metric")
    if primary is None and rows:
        primary = next(iter(rows[0].get("scores") or {}), "")
    cards = "".join(_card(row, primary or "") for row in rows)
    n_correct = sum(1 for r in rows if ((r.get("scores") or {}).get(primary) or 0) >= 0.5)
    title = f"{header.get('model', '?')} / {header.get('task', log.stem)}"
    summary = (
        f"{len(rows)} samples, {n_correct} correct by {primary} ≥ 0.5. Green boxes: target; red: prediction."
    )
    out = Path(output) if output else log.with_name(log.name.replace(".samples.jsonl", ".html"))
    page = _PAGE.format(title=html.escape(title), summary=html.escape(summary), cards=cards, thumb=THUMB)
    atomic_write_text(out, page)
    return out


def browse(run: str | Path, output: str | Path | None = None) -> list[Path]:
    """Pages for a log file, or for every log in a run folder (``results/<model>/``)."""
    run = Path(run)
    if run.is_file():
        return [browse_log(run, output)]
    logs = sorted(run.glob("*.samples.jsonl"))
    if not logs:
        raise ValueError(f"no *.samples.jsonl logs in {run}")
    out_dir = Path(output) if output else None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
    return [
        browse_log(log, out_dir / log.name.replace(".samples.jsonl", ".html") if out_dir else None)
        for log in logs
    ]

"""index.html: one self-contained page (inline CSS, figures embedded as base64 PNG).

It opens offline from disk with no server; the SVG/PDF files next to it are linked for
download. A tiny inline script records, once the page has loaded, how many images decoded
(``data-images-loaded`` on <html>), which the headless-browser check reads back.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field

from bkd_sweep.report.data import ResultsData, format_value, norm_value
from bkd_sweep.config import CategoricalParam

MAX_FAILED_LISTED = 20


@dataclass(frozen=True)
class PageFigure:
    name: str
    caption: str
    png: bytes
    files: tuple[str, ...] = field(default_factory=tuple)  # sibling files, for download links


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#222;
background:#fafafa}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{margin:0 0 4px;font-size:24px}h2{margin-top:32px;border-bottom:1px solid #ddd;padding-bottom:4px}
nav a{margin-right:12px}.muted{color:#666}
table{border-collapse:collapse;margin:8px 0;background:#fff;font-variant-numeric:tabular-nums}
caption{caption-side:top;text-align:left;font-weight:600;padding:4px 0}
th,td{padding:4px 10px;border-bottom:1px solid #e3e3e3;text-align:left;white-space:nowrap}
thead th{border-bottom:2px solid #555}td.num,th.num{text-align:right}
figure{margin:16px 0;overflow-x:auto}figcaption{font-size:12px;color:#555}
p.note{margin:2px 0}sup.marker{color:#b00}
.counts td{font-weight:600}.figure img{max-width:100%;height:auto;border:1px solid #ddd;
background:#fff}
"""

_SCRIPT = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  var root = document.documentElement;
  root.setAttribute('data-images-total', String(imgs.length));
  root.setAttribute('data-images-loaded', String(ok));
  var tables = document.querySelectorAll('figure.bkd-table table').length;
  root.setAttribute('data-tables', String(tables));
  root.setAttribute('data-ready', '1');
});
"""


def _esc(text: object) -> str:
    return html.escape(str(text))


def _study_section(data: ResultsData) -> str:
    s = data.study
    base = s.base_config()
    facts = [
        ("dataset", base.data.dataset), ("teacher", base.teacher.arch),
        ("student", f"{base.student.arch}, T = {base.student.timesteps}, "
                    f"{base.student.neuron.type} neurons"),
        ("training", f"{base.train.epochs} epochs, {base.train.optimizer.name} "
                     f"lr {base.train.optimizer.lr:g}"),
        ("distillation (base)", f"{base.distill.mode}, logit loss {base.distill.logit_loss}, "
                                f"blur ratio {base.distill.blur_ratio:g}"),
        ("search", f"{s.search.sampler} sampler, seeds {list(s.search.seeds)}, objectives "
                   + ", ".join(f"{o.mode} {o.metric}" for o in s.search.objectives)),
    ]
    rows = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in facts)
    params = []
    for path, spec in s.search.params.items():
        if isinstance(spec, CategoricalParam):
            values = ", ".join(format_value(v) for v in spec.values)
        else:
            values = f"[{spec.low:g}, {spec.high:g}]" + (" log" if spec.log else "")
        when = (" when " + "; ".join(f"{k} in {v}" for k, v in spec.when.items())
                if spec.when else "")
        params.append(f"<tr><td>{_esc(path)}</td><td>{_esc(values)}{_esc(when)}</td></tr>")
    space = (f"<table><caption>Search space</caption><thead><tr><th>parameter</th><th>values"
             f"</th></tr></thead><tbody>{''.join(params)}</tbody></table>" if params else "")
    description = s.description.strip() or "No description given in the study file."
    return (f'<section id="study"><h2>Study</h2><p>{_esc(description)}</p>'
            f"<table><tbody>{rows}</tbody></table>{space}</section>")


def _status_section(data: ResultsData) -> str:
    counts = data.status_counts()
    t = data.trials
    device_h = float(t["device_seconds"].fillna(0).sum()) / 3600 if "device_seconds" in t else 0
    wall_h = float(t["wall_seconds"].fillna(0).sum()) / 3600 if "wall_seconds" in t else 0
    head = "".join(f"<th class=\"num\">{k}</th>" for k in (
        *counts, "total", "device-hours", "teacher device-hours", "trial wall-hours"))
    cells = [*counts.values(), len(t), f"{device_h:.2f}", f"{data.teacher_device_hours:.2f}",
             f"{wall_h:.2f}"]
    body = "".join(f'<td class="num" data-status-count="{k}">{_esc(v)}</td>'
                   for k, v in zip((*counts, "total", "device_hours", "teacher_device_hours",
                                    "wall_hours"), cells))
    out = (f'<section id="status"><h2>Trials</h2><table class="counts"><thead><tr>{head}'
           f"</tr></thead><tbody><tr>{body}</tr></tbody></table>")
    if data.stopped_by:
        out += (f'<p class="budget" id="stopped-by">The budget stopped this sweep before all '
                f"of its trials ran: {_esc(data.stopped_by)}.</p>")
    failed = t[t["status"] == "failed"]
    if len(failed):
        items = []
        for tid, reason in list(zip(failed["trial_id"].tolist(),
                                    failed["reason"].tolist() if "reason" in failed
                                    else [None] * len(failed)))[:MAX_FAILED_LISTED]:
            reason = norm_value(reason)
            items.append(f"<li><code>{_esc(tid)}</code>: {_esc(reason or 'no reason recorded')}"
                         "</li>")
        more = len(failed) - MAX_FAILED_LISTED
        tail = f"<li>… and {more} more</li>" if more > 0 else ""
        out += f"<p>Failed trials:</p><ul>{''.join(items)}{tail}</ul>"
    return out + "</section>"


def _figure_html(fig: PageFigure) -> str:
    data = base64.b64encode(fig.png).decode("ascii")
    links = " · ".join(f'<a href="{_esc(f)}">{_esc(f.rsplit(".", 1)[-1].upper())}</a>'
                       for f in fig.files)
    return (f'<figure class="figure" id="figure-{_esc(fig.name)}"><img alt="{_esc(fig.caption)}"'
            f' src="data:image/png;base64,{data}"><figcaption>{_esc(fig.caption)}'
            f"{' — ' + links if links else ''}</figcaption></figure>")


def index_html(data: ResultsData, tables: list[tuple[str, str]],
               figures: list[PageFigure]) -> str:
    """The whole page. ``tables``: (section title, HTML fragment) in display order."""
    name = data.study.name
    nav = ['<a href="#study">study</a>', '<a href="#status">trials</a>',
           '<a href="#tables">tables</a>', '<a href="#figures">figures</a>']
    table_html = "\n".join(f"<h3>{_esc(title)}</h3>\n{fragment}" for title, fragment in tables)
    figure_html = "\n".join(_figure_html(f) for f in figures) or "<p>No figures (no data).</p>"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>bkd-sweep report: {_esc(name)}</title>
<style>{_CSS}</style>
</head>
<body>
<main>
<h1>bkd-sweep report: {_esc(name)}</h1>
<p class="muted">Generated from results/{_esc(name)}/ (trials.parquet, epochs.parquet,
study.json); {len(data.trials)} trials.</p>
<nav>{''.join(nav)}</nav>
{_study_section(data)}
{_status_section(data)}
<section id="tables"><h2>Tables</h2>
{table_html or '<p>No tables.</p>'}
</section>
<section id="figures"><h2>Figures</h2>
{figure_html}
</section>
</main>
<script>{_SCRIPT}</script>
</body>
</html>
"""

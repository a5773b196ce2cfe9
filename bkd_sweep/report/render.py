"""Render a Table as Markdown, LaTeX (pandas Styler, booktabs) or an HTML fragment.

Renderers are registered by format name; output is a pure function of the Table (no
timestamps), so the same Parquet gives byte-identical files.
"""

from __future__ import annotations

import html
from typing import Callable

import pandas as pd

from bkd_sweep.registry import Registry
from bkd_sweep.report.tables import DAGGER, Cell, Table

RENDERERS: Registry[str] = Registry("table format")
EXTENSIONS = {"md": "md", "tex": "tex", "html": "html"}
# the significance mark (stats.SIG_MARK) as a superscript; escaped so Markdown keeps the star
SIG_MD, SIG_TEX, SIG_HTML = r"<sup>\*</sup>", "$^{*}$", '<sup class="sig">*</sup>'


def register_renderer(name: str) -> Callable[[Callable[[Table], str]], Callable[[Table], str]]:
    return RENDERERS.register(name)


def render(table: Table, fmt: str) -> str:
    return RENDERERS.create(fmt, table=table)


# --------------------------------------------------------------------------------------
# Markdown


def _md_cell(cell: Cell) -> str:
    text = (cell.text.replace("|", r"\|") + (DAGGER if cell.marker else "")
            + (SIG_MD if cell.significant else ""))
    if not text:
        return ""
    if cell.emphasis == "bold":
        return f"**{text}**"
    if cell.emphasis == "underline":
        return f"<u>{text}</u>"
    return text


@register_renderer("md")
def to_markdown(table: Table) -> str:
    """A GitHub pipe table: best in **bold**, second <u>underlined</u>, notes below."""
    header = [h.replace("|", r"\|") for h in table.header]
    body = [[_md_cell(c) for c in row] for row in table.rows]
    widths = [max([len(h), 3] + [len(r[j]) for r in body]) for j, h in enumerate(header)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

    rule = ["-" * (w - 1) + ":" if a == "r" else "-" * w for w, a in zip(widths, table.align)]
    out = [f"**{table.caption}**", "", line(header), "| " + " | ".join(rule) + " |"]
    out += [line(r) for r in body]
    if table.notes:
        out.append("")
        out += [f"{n}  " if i < len(table.notes) - 1 else n for i, n in enumerate(table.notes)]
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------
# LaTeX

_TEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "±": r"$\pm$", DAGGER: r"$^\dagger$", "—": "--", "−": "$-$", "×": r"$\times$",
    "<": r"\textless{}", ">": r"\textgreater{}", "α": r"$\alpha$",
}


def tex_escape(text: str) -> str:
    """Plain Unicode text -> LaTeX that pdflatex compiles (underscores, ±, †, ...)."""
    return "".join(_TEX_SPECIAL.get(ch, ch) for ch in text)


@register_renderer("tex")
def to_latex(table: Table) -> str:
    """A ``table`` float around pandas' Styler.to_latex(hrules=True) (needs booktabs)."""
    header = [tex_escape(h) for h in table.header]
    cells = [[tex_escape(c.text) + (r"$^\dagger$" if c.marker else "")
              + (SIG_TEX if c.significant else "") for c in row] for row in table.rows]
    frame = pd.DataFrame(cells, columns=pd.Index(header, dtype=object), dtype=object)
    styles = pd.DataFrame(
        [[{"bold": "textbf:--rwrap;", "underline": "underline:--rwrap;"}.get(c.emphasis, "")
          for c in row] for row in table.rows], columns=frame.columns, dtype=object)
    styler = frame.style.hide(axis="index")
    if len(frame):
        styler = styler.apply(lambda _: styles.set_axis(frame.index), axis=None)
    tabular = styler.to_latex(hrules=True, column_format=table.align).rstrip("\n")
    notes = "\\\\\n".join(tex_escape(n) for n in table.notes)  # one note per line
    label = table.name.replace("_", "-")
    parts = [r"\begin{table}[t]", r"\centering", rf"\caption{{{tex_escape(table.caption)}}}",
             rf"\label{{tab:{label}}}", tabular]
    if notes:
        parts += [r"\par\smallskip", r"\begin{minipage}{\linewidth}\footnotesize", notes,
                  r"\end{minipage}"]
    parts.append(r"\end{table}")
    return "\n".join(parts) + "\n"


# --------------------------------------------------------------------------------------
# HTML


def _html_cell(cell: Cell, tag: str, align: str) -> str:
    text = html.escape(cell.text)
    if cell.marker:
        text += f'<sup class="marker">{DAGGER}</sup>'
    if cell.significant:
        text += SIG_HTML
    if cell.emphasis == "bold":
        text = f"<strong>{text}</strong>"
    elif cell.emphasis == "underline":
        text = f"<u>{text}</u>"
    cls = ' class="num"' if align == "r" else ""
    return f"<{tag}{cls}>{text}</{tag}>"


@register_renderer("html")
def to_html(table: Table) -> str:
    """A self-describing <figure> fragment (table + notes) to embed in index.html."""
    head = "".join(_html_cell(Cell(h), "th", a) for h, a in zip(table.header, table.align))
    body = "\n".join("<tr>" + "".join(_html_cell(c, "td", a) for c, a in zip(row, table.align))
                     + "</tr>" for row in table.rows)
    notes = "".join(f'<p class="note">{html.escape(n)}</p>' for n in table.notes)
    name = html.escape(table.name)
    return (f'<figure class="bkd-table" id="table-{name}" data-table="{name}">\n'
            f"<table>\n<caption>{html.escape(table.caption)}</caption>\n"
            f"<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>\n"
            f"<figcaption>{notes}</figcaption>\n</figure>\n")

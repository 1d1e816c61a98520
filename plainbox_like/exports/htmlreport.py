"""``export --format html``: one self-contained page about a session.

The page has the session's summary (title, id, times, duration, status),
the outcome counts as coloured boxes and a bar, a table of the jobs, and the
output of every job that ran: one collapsible ``<details>`` per job (open
for the jobs that failed, crashed or were interrupted), standard error in red
and marked as such, earlier attempts in their own collapsed section.

It works offline and from a file: no JavaScript, no external style sheets,
images or fonts, and a Content-Security-Policy that forbids loading anything.
Every piece of text from the session goes through :func:`html.escape` (after
:func:`common.printable`). Output is cut to :data:`OUTPUT_LIMIT` bytes per
attempt (the first and last halves, with a note in between), and after
:data:`TOTAL_OUTPUT_LIMIT` bytes for the whole page further output is left
out with a note, so a huge session still gives a page a browser can open.
"""

from __future__ import annotations

import html
import re
from typing import BinaryIO, Iterable

from plainbox_like import __version__
from plainbox_like.exports import common
from plainbox_like.read.replay import AttemptRef
from plainbox_like.store.names import FORMAT
from plainbox_like.store.reader import LoadedSession

#: Bytes of output shown per attempt.
OUTPUT_LIMIT = 256 * 1024
#: Bytes of output shown in the whole page.
TOTAL_OUTPUT_LIMIT = 32 * 1024 * 1024

#: Statuses with a colour of their own; anything else gets the ``other`` colour.
_STYLED = frozenset(common.STATUS_ORDER)

STYLE = """
:root {
  --fg: #1f2328; --muted: #59636e; --bg: #ffffff; --panel: #f6f8fa; --border: #d1d9e0;
  --link: #0969da; --out-bg: #0d1117; --out-fg: #e6edf3; --err-fg: #ff9492; --err-bg: #3d1518;
  --c-pass: #1a7f37; --c-fail: #cf222e; --c-crash: #8250df; --c-interrupted: #bc4c00;
  --c-running: #0969da; --c-skip: #6e7781; --c-skipped-dependency: #9a6700;
  --c-skipped-resource: #9a6700; --c-not-supported: #57606a; --c-not-implemented: #57606a;
  --c-undecided: #6639ba; --c-not-run: #afb8c1; --c-other: #57606a;
  --c-complete: #1a7f37; --c-incomplete: #bc4c00; --c-corrupt: #cf222e;
}
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body {
  margin: 0; color: var(--fg); background: var(--bg);
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Liberation Sans", "DejaVu Sans", sans-serif;
}
main { max-width: 1180px; margin: 0 auto; padding: 28px 32px 48px; }
a { color: var(--link); text-decoration: none; }
a:hover { text-decoration: underline; }
code, pre, .mono { font-family: ui-monospace, "SFMono-Regular", "DejaVu Sans Mono", "Liberation Mono", Menlo, Consolas, monospace; }
header { border-bottom: 1px solid var(--border); padding-bottom: 18px; margin-bottom: 22px; }
.kicker { color: var(--muted); font-size: 13px; letter-spacing: .06em; text-transform: uppercase; }
h1 { font-size: 28px; line-height: 1.25; margin: 4px 0 10px; overflow-wrap: anywhere; }
h2 { font-size: 19px; margin: 34px 0 12px; padding-bottom: 6px; border-bottom: 1px solid var(--border); }
.headline { display: flex; flex-wrap: wrap; gap: 8px 14px; align-items: center; color: var(--muted); }
.headline code { color: var(--fg); background: var(--panel); padding: 1px 6px; border-radius: 6px; }
.pill {
  display: inline-block; padding: 1px 9px; border-radius: 999px; color: #fff; font-size: 12.5px;
  font-weight: 600; line-height: 20px; white-space: nowrap; background: var(--c-other);
}
.pill.big { font-size: 14px; padding: 2px 12px; line-height: 22px; }
.o-pass { background: var(--c-pass); } .o-fail { background: var(--c-fail); }
.o-crash { background: var(--c-crash); } .o-interrupted { background: var(--c-interrupted); }
.o-running { background: var(--c-running); } .o-skip { background: var(--c-skip); }
.o-skipped-dependency { background: var(--c-skipped-dependency); }
.o-skipped-resource { background: var(--c-skipped-resource); }
.o-not-supported { background: var(--c-not-supported); }
.o-not-implemented { background: var(--c-not-implemented); }
.o-undecided { background: var(--c-undecided); }
.o-not-run { background: var(--c-not-run); color: #1f2328; }
.s-complete { background: var(--c-complete); } .s-incomplete { background: var(--c-incomplete); }
.s-running { background: var(--c-running); }
.stats { display: grid; grid-template-columns: repeat(auto-fill, minmax(128px, 1fr)); gap: 12px; margin: 0 0 14px; }
.stat { background: var(--panel); border: 1px solid var(--border); border-top: 4px solid var(--c-other); border-radius: 8px; padding: 10px 14px; }
.stat .n { font-size: 26px; font-weight: 700; line-height: 1.15; font-variant-numeric: tabular-nums; }
.stat .l { color: var(--muted); font-size: 13px; }
.stat.total { border-top-color: var(--fg); }
.stat.o-pass, .stat.o-fail, .stat.o-crash, .stat.o-interrupted, .stat.o-running, .stat.o-skip,
.stat.o-skipped-dependency, .stat.o-skipped-resource, .stat.o-not-supported, .stat.o-not-implemented,
.stat.o-undecided, .stat.o-not-run, .stat.o-other { background: var(--panel); color: var(--fg); }
.stat.o-pass { border-top-color: var(--c-pass); } .stat.o-fail { border-top-color: var(--c-fail); }
.stat.o-crash { border-top-color: var(--c-crash); } .stat.o-interrupted { border-top-color: var(--c-interrupted); }
.stat.o-running { border-top-color: var(--c-running); } .stat.o-skip { border-top-color: var(--c-skip); }
.stat.o-skipped-dependency { border-top-color: var(--c-skipped-dependency); }
.stat.o-skipped-resource { border-top-color: var(--c-skipped-resource); }
.stat.o-not-supported { border-top-color: var(--c-not-supported); }
.stat.o-not-implemented { border-top-color: var(--c-not-implemented); }
.stat.o-undecided { border-top-color: var(--c-undecided); } .stat.o-not-run { border-top-color: var(--c-not-run); }
.stat.o-pass .n { color: var(--c-pass); } .stat.o-fail .n { color: var(--c-fail); }
.stat.o-crash .n { color: var(--c-crash); } .stat.o-interrupted .n { color: var(--c-interrupted); }
.bar { display: flex; height: 12px; border-radius: 6px; overflow: hidden; background: var(--panel); border: 1px solid var(--border); }
.bar span { display: block; height: 100%; min-width: 3px; }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: 5px 18px; margin: 0; }
dl.meta dt { color: var(--muted); }
dl.meta dd { margin: 0; overflow-wrap: anywhere; }
table { border-collapse: collapse; width: 100%; font-size: 14px; }
th, td { text-align: left; padding: 7px 10px; border-bottom: 1px solid var(--border); vertical-align: top; }
th { background: var(--panel); font-weight: 600; position: sticky; top: 0; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.job { min-width: 17em; overflow-wrap: anywhere; font-family: ui-monospace, "DejaVu Sans Mono", "Liberation Mono", Menlo, Consolas, monospace; font-size: 13px; }
td.note { color: var(--muted); overflow-wrap: break-word; }
tr.bad td { background: #fff5f5; }
.unplanned { color: var(--muted); font-size: 12px; margin-left: 6px; font-family: system-ui, sans-serif; }
details.job { border: 1px solid var(--border); border-radius: 8px; margin: 10px 0; background: var(--bg); }
details.job > summary {
  cursor: pointer; padding: 9px 14px; background: var(--panel); border-radius: 8px; list-style-position: inside;
  display: list-item; overflow-wrap: anywhere;
}
details.job[open] > summary { border-bottom: 1px solid var(--border); border-radius: 8px 8px 0 0; }
details.job > summary .id { font-family: ui-monospace, "DejaVu Sans Mono", "Liberation Mono", Menlo, Consolas, monospace; font-weight: 600; margin: 0 8px; }
details.job > summary .facts { color: var(--muted); font-size: 13px; }
.body { padding: 10px 14px 14px; }
.attempt-meta { color: var(--muted); font-size: 13.5px; margin: 0 0 8px; }
.attempt-meta b { color: var(--fg); font-weight: 600; }
.legend { font-size: 12px; margin-left: 6px; }
.tag { display: inline-block; padding: 0 6px; border-radius: 4px; font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12px; }
.tag.out { background: var(--out-bg); color: var(--out-fg); }
.tag.err { background: var(--err-bg); color: var(--err-fg); border-left: 3px solid var(--err-fg); }
pre.out {
  margin: 0; padding: 10px 12px; background: var(--out-bg); color: var(--out-fg); border-radius: 6px;
  font-size: 12.5px; line-height: 1.45; white-space: pre-wrap; overflow-wrap: anywhere;
  max-height: 34em; overflow: auto;
}
pre.out .err { color: var(--err-fg); background: var(--err-bg); }
pre.out .omitted { color: #d29922; font-style: italic; }
.note-box { border-left: 4px solid var(--c-interrupted); background: #fff8f0; padding: 6px 10px; margin: 0 0 8px; font-size: 13.5px; border-radius: 0 6px 6px 0; }
.empty { color: var(--muted); font-style: italic; margin: 0; }
details.attempt { margin-top: 10px; }
details.attempt > summary { cursor: pointer; color: var(--muted); font-size: 13.5px; }
details.attempt > .body { padding: 8px 0 0 14px; }
footer { margin-top: 40px; color: var(--muted); font-size: 12.5px; border-top: 1px solid var(--border); padding-top: 12px; }
@media (prefers-color-scheme: dark) {
  :root { --fg: #e6edf3; --muted: #9198a1; --bg: #0d1117; --panel: #161b22; --border: #30363d; --link: #4493f8; --out-bg: #010409; }
  tr.bad td { background: #2a1215; }
  .note-box { background: #2b1d0e; }
}
@media print {
  pre.out { max-height: none; }
  th { position: static; }
}
"""


def esc(text: object) -> str:
    """Printable and HTML-escaped (quotes too, so it is safe in attributes)."""
    return html.escape(common.printable(str(text)), quote=True)


def _status_class(status: str) -> str:
    return "o-" + (status if status in _STYLED and re.fullmatch(r"[a-z-]+", status) else "other")


def _pill(status: str, big: bool = False) -> str:
    size = " big" if big else ""
    return f'<span class="pill{size} {_status_class(status)}">{esc(status)}</span>'


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    for unit in ("KiB", "MiB", "GiB"):
        n /= 1024
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}"
    return f"{n} B"  # pragma: no cover


class _Budget:
    """How much output the page may still show."""

    def __init__(self, total: int) -> None:
        self.left = total


def _output_html(
    loaded: LoadedSession, view: common.JobView, ref: AttemptRef, limit: int, budget: _Budget
) -> tuple[str, common.CappedOutput]:
    # Only the head and tail that can be shown are kept: memory stays bounded whatever the log's size.
    output = common.read_attempt_capped(loaded, ref, min(limit, max(budget.left, 1024)) if budget.left > 0 else 0)
    parts = []
    if output.problem:
        parts.append(f'<p class="note-box">{esc(output.problem)}</p>')
    if output.source == "none":
        parts.append('<p class="empty">This attempt kept no output log.</p>')
        return "".join(parts), output
    if not output.size:
        if output.source != "missing":
            parts.append('<p class="empty">No output.</p>')
        return "".join(parts), output
    hint = common.log_hint(loaded, view.id, ref.attempt)
    if budget.left <= 0:
        parts.append(
            f'<p class="empty">Output not shown ({esc(_size(output.size))}): the report reached its size '
            f"limit; {esc(hint)}.</p>"
        )
        return "".join(parts), output
    head, tail, omitted = output.head, output.tail, output.omitted
    budget.left -= output.size - omitted
    pre = [_segments_html(head)]
    if omitted:
        pre.append(f'\n<span class="omitted">{esc(common.omitted_note(omitted, hint))}</span>\n')
        pre.append(_segments_html(tail))
    parts.append(f'<pre class="out">{"".join(pre)}</pre>')
    return "".join(parts), output


def _segments_html(segments: Iterable[tuple[str, bytes]]) -> str:
    out = []
    for stream, data in segments:
        text = esc(common.decode(data))
        if stream == "stderr":
            out.append(f'<span class="err" title="stderr">{text}</span>')
        else:
            out.append(text)
    return "".join(out)


def _attempt_facts(ref: AttemptRef) -> list[str]:
    facts = []
    result = ref.result
    if result is None:
        facts.append("no result")
        return facts
    if result.execution_duration is not None:
        facts.append(common.format_duration(result.execution_duration))
    if result.return_code is not None:
        facts.append(f"return code {result.return_code}")
    return facts


def _attempt_html(
    loaded: LoadedSession, view: common.JobView, ref: AttemptRef, limit: int, budget: _Budget
) -> str:
    body, output = _output_html(loaded, view, ref, limit, budget)
    meta = [f"<b>Attempt {ref.attempt}</b>"]
    if ref.result is not None:
        meta.append(f"outcome {esc(ref.result.outcome)}")
        started = common.local_time(ref.result.started)
        if started:
            meta.append(f"started {esc(started)}")
    elif ref.running:
        meta.append("started, no result")
    meta.extend(esc(f) for f in _attempt_facts(ref))
    sizes = []
    for stream, css in (("stdout", "out"), ("stderr", "err")):
        n = output.sizes[stream]
        if n:
            sizes.append(f'<span class="tag {css}">{stream}</span> {esc(_size(n))}')
    if sizes:
        meta.append(" ".join(sizes))
    if not all(output.utf8.values()):
        meta.append("not valid UTF-8: undecodable bytes are shown as \ufffd ('plainbox-like log' prints the exact bytes)")
    note = ref.result.skip_reason or ref.result.comments if ref.result is not None else None
    lines = [f'<p class="attempt-meta">{" · ".join(meta)}</p>']
    if note:
        lines.append(f'<p class="attempt-meta">{esc(note)}</p>')
    return "".join(lines) + body


def has_log(loaded: LoadedSession, view: common.JobView) -> bool:
    """Whether any attempt of the job kept an output log (a skipped job has none)."""
    return any(
        ref.io_log_filename or ref.running or (view.id, ref.attempt) in loaded.inline_io_logs for ref in view.attempts
    )


def _job_html(loaded: LoadedSession, view: common.JobView, limit: int, budget: _Budget) -> str:
    opened = " open" if view.status in common.BAD_STATUSES else ""
    facts = []
    if view.duration is not None:
        facts.append(common.format_duration(view.duration))
    if view.return_code is not None:
        facts.append(f"rc {view.return_code}")
    if len(view.attempts) > 1:
        facts.append(f"{len(view.attempts)} attempts")
    summary = (
        f"<summary>{_pill(view.status)}<span class=\"id\">{esc(view.id)}</span>"
        f'<span class="facts">{esc(" · ".join(facts))}</span></summary>'
    )
    latest, earlier = view.attempts[-1], view.attempts[:-1]
    parts = [f'<details class="job" id="job-{view.index}"{opened}>', summary, '<div class="body">']
    parts.append(_attempt_html(loaded, view, latest, limit, budget))
    for ref in reversed(earlier):
        outcome = ref.result.outcome if ref.result is not None else "no result"
        label = " · ".join([f"Attempt {ref.attempt}: {outcome}", *_attempt_facts(ref)[:2]])
        parts.append(
            f'<details class="attempt"><summary>{esc(label)}</summary><div class="body">'
            f"{_attempt_html(loaded, view, ref, limit, budget)}</div></details>"
        )
    parts.append("</div></details>")
    return "".join(parts)


def render(
    loaded: LoadedSession, output_limit: int = OUTPUT_LIMIT, total_output_limit: int = TOTAL_OUTPUT_LIMIT
) -> str:
    """The whole page."""
    status = common.session_status(loaded)
    views = common.job_views(loaded, status)
    counts = common.status_counts(views)
    meta = loaded.state.metadata
    title = meta.title or f"Session {loaded.id}"
    budget = _Budget(total_output_limit)
    done = sum(1 for v in views if v.latest is not None)
    planned = len(loaded.state.desired_job_list)

    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">",
        f'<meta name="generator" content="plainbox-like {esc(__version__)}">',
        f"<title>{esc(title)} · plainbox-like</title>",
        f"<style>{STYLE}</style>",
        "</head>",
        "<body>",
        "<main>",
        "<header>",
        '<div class="kicker">plainbox-like session report</div>',
        f"<h1>{esc(title)}</h1>",
        '<div class="headline">',
        f'<span class="pill big s-{esc(status)}">{esc(status)}</span>',
        f"<span>id <code>{esc(loaded.id)}</code></span>",
    ]
    created = common.local_time(meta.created)
    if created:
        out.append(f"<span>started {esc(created)}</span>")
    wall = common.wall_time(loaded)
    if wall is not None:
        out.append(f"<span>took {esc(common.format_duration(wall))}</span>")
    out.append("</div></header>")

    # -- counts
    out.append('<section aria-label="Outcome counts"><div class="stats">')
    out.append(f'<div class="stat total"><div class="n">{len(views)}</div><div class="l">jobs</div></div>')
    for name, n in counts.items():
        out.append(
            f'<div class="stat {_status_class(name)}"><div class="n">{n}</div><div class="l">{esc(name)}</div></div>'
        )
    out.append("</div>")
    if views:
        out.append('<div class="bar" role="img" aria-label="' + esc(", ".join(f"{k} {v}" for k, v in counts.items())) + '">')
        for name, n in counts.items():
            width = 100.0 * n / len(views)
            out.append(f'<span class="{_status_class(name)}" style="width:{width:.3f}%" title="{esc(name)}: {n}"></span>')
        out.append("</div>")
    out.append("</section>")

    # -- summary
    rows = [
        ("Title", meta.title or "-"),
        ("Id", loaded.id),
        ("Status", status),
        ("Path", loaded.path),
        (
            "Origin",
            loaded.origin
            if loaded.origin == FORMAT
            else f"{loaded.origin} (Checkbox/Plainbox state version {loaded.source_version})",
        ),
        ("Created", common.local_time(meta.created) or "-"),
        ("Updated", common.local_time(meta.updated) or "-"),
        ("Finished", common.local_time(meta.finished) or "-"),
        ("Duration", common.format_duration(wall)),
        ("Jobs", f"{done} of {planned} planned jobs have a result"),
    ]
    if meta.runner is not None:
        rows.append(("Runner", f"pid {meta.runner.pid} on {meta.runner.host}"))
    for label, value in (
        ("App", meta.app_id),
        ("Tags", ", ".join(meta.tags)),
        ("Flags", ", ".join(meta.flags)),
        ("Parent", meta.parent_session and f"{meta.parent_session}" + (f" (job {meta.parent_job})" if meta.parent_job else "")),
        ("Journal", loaded.journal_torn),
    ):
        if value:
            rows.append((label, value))
    out.append("<h2>Summary</h2><dl class=\"meta\">")
    for label, value in rows:
        out.append(f"<dt>{esc(label)}</dt><dd>{esc(value)}</dd>")
    out.append("</dl>")

    # -- jobs table
    out.append("<h2>Jobs</h2>")
    if not views:
        out.append('<p class="empty">This session has no jobs.</p>')
    else:
        out.append(
            '<table><thead><tr><th class="num">#</th><th>Job</th><th>Outcome</th><th class="num">Duration</th>'
            '<th class="num">Return code</th><th class="num">Attempts</th><th>Skip reason / comments</th></tr></thead><tbody>'
        )
        for view in views:
            bad = ' class="bad"' if view.status in common.BAD_STATUSES else ""
            name = esc(view.id)
            if has_log(loaded, view):
                name = f'<a href="#job-{view.index}">{name}</a>'
            if not view.planned:
                name += '<span class="unplanned">(not in the plan)</span>'
            rc = "-" if view.return_code is None else str(view.return_code)
            out.append(
                f"<tr{bad}><td class=\"num\">{view.index}</td><td class=\"job\">{name}</td><td>{_pill(view.status)}</td>"
                f'<td class="num">{esc(common.format_duration(view.duration))}</td><td class="num">{esc(rc)}</td>'
                f'<td class="num">{len(view.attempts)}</td><td class="note">{esc(view.note or "")}</td></tr>'
            )
        out.append("</tbody></table>")

    # -- output
    with_output = [v for v in views if has_log(loaded, v)]
    if with_output:
        out.append(
            '<h2>Output</h2><p class="attempt-meta">The latest attempt of each job; earlier attempts are below it. '
            'Standard output <span class="tag out">stdout</span>, standard error '
            '<span class="tag err">stderr</span> in red.</p>'
        )
        for view in with_output:
            out.append(_job_html(loaded, view, output_limit, budget))

    out.append(
        f"<footer>Generated by plainbox-like {esc(__version__)} from <code>{esc(loaded.path)}</code>.</footer>"
    )
    out.append("</main></body></html>\n")
    return "\n".join(out)


def write(
    loaded: LoadedSession,
    out: BinaryIO,
    output_limit: int = OUTPUT_LIMIT,
    total_output_limit: int = TOTAL_OUTPUT_LIMIT,
) -> None:
    """Write the page as UTF-8."""
    out.write(render(loaded, output_limit, total_output_limit).encode("utf-8"))

"""Group-report plots: small inline SVG bar charts, histograms and tier-share bars.

Built as text (no matplotlib: a group report renders in milliseconds). Every label goes
through html.escape, so the SVG is safe to embed as markup.
"""
from __future__ import annotations

import html

import numpy as np

from bids_qc.reports.formatting import TIER_COLOURS

_FONT = 'font-family="system-ui, sans-serif" font-size="10" fill="#52606d"'


def _esc(text) -> str:
    return html.escape(str(text), quote=True)


def _nice_ticks(top: float, n: int = 4) -> list[float]:
    """0 and up to ``n`` round tick values covering [0, top] (integers when top is small)."""
    top = max(float(top), 1.0)
    raw = top / n
    mag = 10 ** np.floor(np.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    step = max(step, 1.0)
    return [float(v) for v in np.arange(0, top + step * 0.999, step)]


def _svg(width: int, height: int, label: str, body: list[str]) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width} {height}" '
            f'width="{width}" height="{height}" role="img" aria-label="{_esc(label)}">'
            + "".join(body) + "</svg>")


def _legend(items, x: float, y: float) -> list[str]:
    out = []
    for name, colour in items:
        out.append(f'<rect x="{x:.1f}" y="{y - 8:.1f}" width="9" height="9" rx="2" fill="{colour}"/>'
                   f'<text x="{x + 12:.1f}" y="{y:.1f}" {_FONT}>{_esc(name)}</text>')
        x += 18 + 6.2 * len(str(name))
    return out


def bar_chart(categories, series, *, stacked: bool = False, title: str = "", ylabel: str = "scans",
              width: int = 360, height: int = 210, gap: float = 0.25, legend: bool = True,
              xlabels=None, xticks=None) -> str:
    """Vertical bars as inline SVG.

    ``series`` is a list of (name, colour, values) with one value per category; bars are side
    by side, or stacked when ``stacked``. ``xlabels`` replaces the category labels (use "" to
    skip some); ``xticks`` [(fraction of the axis, label)] puts labels between bars instead
    (histogram edges). Each bar has a tooltip (``<title>``) with its exact value.
    """
    left, right, top, bottom = 34, 12, (34 if legend else 18) if title else (22 if legend else 8), 24
    pw, ph = width - left - right, height - top - bottom
    n = max(1, len(categories))
    vals = np.array([[float(v or 0) for v in values] for _, _, values in series]).reshape(len(series), -1)
    ymax = (vals.sum(axis=0).max() if stacked else vals.max()) if vals.size else 0
    ticks = _nice_ticks(ymax)
    scale = ph / ticks[-1]
    body = []
    if title:
        body.append(f'<text x="{left}" y="12" {_FONT} font-weight="600" fill="#1f2933">{_esc(title)}</text>')
    if legend and len(series) > 1:
        body += _legend([(name, colour) for name, colour, _ in series], left, top - 8)
    for t in ticks:
        y = top + ph - t * scale
        body.append(f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e6e8eb"/>'
                    f'<text x="{left - 4}" y="{y + 3:.1f}" text-anchor="end" {_FONT}>{t:g}</text>')
    band = pw / n
    inner = band * (1 - gap)
    for i, cat in enumerate(categories):
        x0 = left + i * band + band * gap / 2
        base = 0.0
        for j, (name, colour, _) in enumerate(series):
            v = vals[j, i]
            if stacked:
                x, w, y0 = x0, inner, base
                base += v
            else:
                w = inner / len(series)
                x, y0 = x0 + j * w, 0.0
            if v > 0:
                tip = f"{cat}: {name} {v:g}" if name else f"{cat}: {v:g}"
                body.append(f'<rect x="{x:.1f}" y="{top + ph - (y0 + v) * scale:.1f}" width="{max(w - 0.5, 0.5):.1f}" '
                            f'height="{v * scale:.1f}" fill="{colour}"><title>{_esc(tip)}</title></rect>')
        label = "" if xticks is not None else (cat if xlabels is None else xlabels[i])
        if label != "":
            body.append(f'<text x="{left + (i + 0.5) * band:.1f}" y="{top + ph + 14}" text-anchor="middle" '
                        f'{_FONT}>{_esc(label)}</text>')
    for frac, label in xticks or []:
        x = left + frac * pw
        body.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top + ph}" y2="{top + ph + 3}" stroke="#9aa5b1"/>'
                    f'<text x="{x:.1f}" y="{top + ph + 14}" text-anchor="middle" {_FONT}>{_esc(label)}</text>')
    body.append(f'<line x1="{left}" x2="{left + pw}" y1="{top + ph}" y2="{top + ph}" stroke="#9aa5b1"/>')
    body.append(f'<text transform="translate(10 {top + ph / 2:.0f}) rotate(-90)" text-anchor="middle" '
                f'{_FONT}>{_esc(ylabel)}</text>')
    return _svg(width, height, title or ylabel, body)


def _fmt_edge(v: float) -> str:
    return f"{v:.2g}" if abs(v) < 10 else f"{v:.0f}"


def histogram_chart(values, tiers=None, *, title: str = "", bins: int = 16, width: int = 270,
                    height: int = 170, legend: bool = False, value_range=None) -> str:
    """Histogram of ``values`` (NaN ignored) as SVG, stacked by tier (1/2/3, other) when given.

    ``value_range`` (lo, hi) fixes the bins (e.g. (0, 1) for probabilities); default data range.
    """
    vals = np.asarray(values, dtype=float)
    ok = np.isfinite(vals)
    if not ok.any():
        return _svg(width, height, title, [
            f'<text x="8" y="12" {_FONT} font-weight="600" fill="#1f2933">{_esc(title)}</text>',
            f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" {_FONT}>no values</text>'])
    lo, hi = value_range or (float(vals[ok].min()), float(vals[ok].max()))
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    tiers = np.full(vals.shape, np.nan) if tiers is None else np.asarray(tiers, dtype=float)
    series = []
    for key, name in ((1, "tier 1"), (2, "tier 2"), (3, "tier 3"), (None, "no tier")):
        sel = ok & (~np.isin(tiers, (1, 2, 3)) if key is None else tiers == key)
        if sel.any():
            series.append((name, TIER_COLOURS[key], np.histogram(vals[sel], edges)[0].tolist()))
    centres = [f"{_fmt_edge(a)}–{_fmt_edge(b)}" for a, b in zip(edges[:-1], edges[1:], strict=True)]
    ticks = [(f, _fmt_edge(lo + f * (hi - lo))) for f in (0.0, 0.5, 1.0)]
    return bar_chart(centres, series, stacked=True, title=title, width=width, height=height,
                     gap=0.08, legend=legend, xticks=ticks)


def share_chart(groups: dict, *, width: int = 460) -> str:
    """Horizontal 100 % stacked bars of tier shares per group (site, scanner), as SVG.

    ``groups`` maps label -> {1: n, 2: n, 3: n, None: n_error_or_untiered}.
    """
    labels = list(groups)
    label_w = min(160, 12 + 6.2 * max((len(str(g)) for g in labels), default=4))
    row, top = 22, 24
    height = top + row * len(labels) + 22
    pw = width - label_w - 24
    keys = ((1, "tier 1"), (2, "tier 2"), (3, "tier 3"), (None, "error / none"))
    body = _legend([(name, TIER_COLOURS[k]) for k, name in keys], label_w, 12)
    for i, g in enumerate(labels):
        total = max(1, sum(groups[g].values()))
        y, x = top + i * row, label_w
        body.append(f'<text x="{label_w - 6}" y="{y + 13}" text-anchor="end" {_FONT}>{_esc(g)}</text>')
        for k, name in keys:
            share = groups[g].get(k, 0) / total
            if share > 0:
                body.append(f'<rect x="{x:.1f}" y="{y + 2}" width="{share * pw:.1f}" height="{row - 6}" '
                            f'fill="{TIER_COLOURS[k]}"><title>{_esc(g)}: {name} {groups[g].get(k, 0)} '
                            f'({100 * share:.0f} %)</title></rect>')
                x += share * pw
    for t in (0, 0.5, 1):
        x = label_w + t * pw
        body.append(f'<text x="{x:.1f}" y="{height - 6}" text-anchor="middle" {_FONT}>{t * 100:.0f} %</text>')
    return _svg(width, height, "tier shares", body)

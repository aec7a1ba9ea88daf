"""The report's stylesheet, inlined so the file stays self-contained."""

CSS = """
:root { --fg: #1d1d1f; --muted: #5a5a5a; --line: #d0d0d0; --pass: #0b6b2f; --fail: #a3160f;
  --pass-bg: #e9f6ee; --fail-bg: #fdecea; --warn-bg: #fff6db; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: #f6f6f4; line-height: 1.45;
  font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
header, main, footer { max-width: 1180px; margin: 0 auto; padding: 0 20px; }
header { padding-top: 16px; }
h1 { font-size: 1.5rem; margin: 0 0 4px; }
h2 { font-size: 1.25rem; margin: 28px 0 8px; border-bottom: 2px solid var(--line);
  padding-bottom: 4px; }
h3 { font-size: 1.05rem; margin: 18px 0 6px; }
nav ul { list-style: none; padding: 0; margin: 10px 0 0; display: flex; flex-wrap: wrap;
  gap: 4px 14px; font-size: .9rem; }
a { color: #0b4f8a; }
.banner { border: 2px solid var(--line); border-left-width: 12px; border-radius: 6px;
  padding: 12px 16px; background: #fff; }
.banner.pass { border-color: var(--pass); background: var(--pass-bg); }
.banner.fail { border-color: var(--fail); background: var(--fail-bg); }
.banner.unknown { border-color: #8a6d00; background: var(--warn-bg); }
.verdict-word { font-size: 1.9rem; font-weight: 800; letter-spacing: .02em; margin: 0; }
.pass .verdict-word { color: var(--pass); }
.fail .verdict-word { color: var(--fail); }
.banner .meta { color: var(--muted); margin: 2px 0 6px; }
.banner ul.breaches { margin: 6px 0 0; padding-left: 1.2em; }
.banner ul.breaches li { margin: 2px 0; }
.tag { display: inline-block; font-size: .75rem; font-weight: 700; padding: 1px 6px;
  border-radius: 3px; border: 1px solid currentColor; margin-right: 6px; vertical-align: 1px; }
.tag.breach, .tag.invariant { color: var(--fail); background: #fff; }
.tag.pass { color: var(--pass); background: #fff; }
.tag.skipped { color: var(--muted); background: #fff; }
.lost-box { border: 2px solid var(--fail); background: #fff; border-radius: 6px;
  padding: 8px 12px; margin-top: 10px; }
.lost-box h2 { border: 0; margin: 0 0 4px; font-size: 1.1rem; color: var(--fail); }
section { background: #fff; border: 1px solid var(--line); border-radius: 6px;
  padding: 4px 18px 14px; margin: 18px 0; }
section h2 { margin-top: 10px; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; margin: 8px 0; font-size: .88rem; min-width: 50%; }
caption { text-align: left; color: var(--muted); padding: 2px 0 4px; caption-side: top; }
th, td { border: 1px solid var(--line); padding: 3px 8px; text-align: left; vertical-align: top; }
thead th { background: #efefed; }
tbody th { font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.breach { background: var(--fail-bg); }
tr.breach th, tr.breach td { border-color: #e6b3ae; }
tr.skipped { color: var(--muted); }
dl.pairs { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; margin: 8px 0; }
dl.pairs dt { font-weight: 600; }
dl.pairs dd { margin: 0; overflow-wrap: anywhere; }
ul.ids { columns: 2 22em; margin: 4px 0; padding-left: 1.2em; font-size: .85rem; }
.note, figcaption, .missing { color: var(--muted); font-size: .88rem; }
.missing { font-style: italic; }
figure { margin: 12px 0 18px; }
figure svg { width: 100%; height: auto; display: block; background: #fff; }
figcaption { margin-top: 4px; }
svg.chart text { font-family: system-ui, "DejaVu Sans", sans-serif; font-size: 11px; fill: #333; }
svg.chart .tick { font-size: 10.5px; fill: #555; }
svg.chart .axis-label { font-size: 11px; fill: #333; }
svg.chart .fault-label { font-size: 10.5px; font-weight: 700; fill: #8a3410; }
svg.chart .phase-label { font-size: 10px; font-style: italic; fill: #333;
  paint-order: stroke; stroke: #fff; stroke-width: 3px; }
svg.chart .direct-label { font-size: 10.5px; font-weight: 600; }
svg.chart .lane-label { font-size: 11px; }
code { font-size: .85em; background: #f1f1ef; padding: 0 3px; border-radius: 3px;
  overflow-wrap: anywhere; }
footer { color: var(--muted); font-size: .8rem; padding: 10px 20px 30px; }
.grid2 { display: grid; grid-template-columns: repeat(auto-fit, minmax(340px, 1fr)); gap: 0 24px; }
@media print { body { background: #fff; } nav { display: none; }
  section { break-inside: avoid; border: 0; } }
"""

"""`rewardflow report RUN_DIR`: one self-contained HTML page (PNG figures inlined as data URIs, no
script, no external file) and the PNGs beside it, from what `rewardflow train` wrote to its output
directory: `metrics.jsonl` (cluster/metrics.py, one object per logged step), `summary.json`
(cluster/launch.py, at the end of a run) and `samples.jsonl` (the sample tables).

A metric, file or section the run lacks is left out and named at the end of the page; only a
directory without `metrics.jsonl` is an error. Every string from the run (prompts, responses,
role and metric names, recipe values) is HTML-escaped: generations are untrusted text.
"""
from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from apps import plots
from core.config import ConfigError

# The step's phases in loop order; together they make up timing/step (timing/reload overlaps
# weight_sync and generation, so it is plotted with the weight sync instead).
PHASES = ("generate", "score", "judge", "reference", "critic", "update", "weight_sync", "other")
NOT_STACKED = ("timing/step", "timing/reload")
MIN_PHASE_S = 1e-3  # a phase never above this (a judge phase without a judge) is left out of the stack
MAX_SAMPLE_ROWS = 200  # the newest rows
MAX_CELL_CHARS = 2000


@dataclass
class Run:
    """What a run directory holds; `by_step` merges every record of a step (a step logs eval and
    training metrics separately, and a resumed run may log a step again: the later value wins)."""

    by_step: dict[int, dict[str, float]]
    times: dict[int, float]  # when each step was last logged (epoch seconds)
    summary: dict
    samples: list[dict]
    bad_lines: int = 0


@dataclass
class Section:
    title: str
    images: list[tuple[str, bytes]]  # (file stem, PNG)
    caption: str = ""


@dataclass
class Report:
    sections: list[tuple[str, Section]] = field(default_factory=list)  # (HTML id, section)
    skipped: list[str] = field(default_factory=list)  # ids of the sections the run has nothing for


# -- reading ----------------------------------------------------------------------------------

def read_jsonl(path: Path) -> tuple[list[dict], int]:
    """The JSON objects of a file, one a line, and how many lines were not one (a run killed
    mid-write leaves half a line)."""
    rows, bad = [], 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if isinstance(row, dict):
            rows.append(row)
        else:
            bad += 1
    return rows, bad


def load_run(run_dir: Path) -> Run:
    if not (run_dir / "metrics.jsonl").is_file():
        raise ConfigError(f"report: {run_dir} has no metrics.jsonl (not the output directory of a rewardflow train run)")
    records, bad = read_jsonl(run_dir / "metrics.jsonl")
    by_step: dict[int, dict[str, float]] = {}
    times: dict[int, float] = {}
    for rec in records:
        step = rec.get("step")
        if type(step) is int:
            by_step.setdefault(step, {}).update(
                {k: float(v) for k, v in rec.items() if type(v) in (int, float) and k not in ("step", "time")})
            if _number(rec.get("time")) is not None:
                times[step] = float(rec["time"])
    summary = {}
    if (run_dir / "summary.json").is_file():
        try:
            loaded = json.loads((run_dir / "summary.json").read_text(encoding="utf-8", errors="replace"))
            summary = loaded if isinstance(loaded, dict) else {}
        except ValueError:
            bad += 1
    samples, bad_samples = read_jsonl(run_dir / "samples.jsonl") if (run_dir / "samples.jsonl").is_file() else ([], 0)
    return Run(dict(sorted(by_step.items())), times, summary, samples, bad + bad_samples)


def names(run: Run, prefix: str) -> list[str]:
    """Metric names under `prefix`, in the order they first appear."""
    return list(dict.fromkeys(k for metrics in run.by_step.values() for k in metrics if k.startswith(prefix)))


def series(run: Run, metric_names: list[str], label=lambda n: n) -> plots.Series:
    """Per metric, the steps that logged it and its values there (inf as NaN: a gap)."""
    out = {}
    for name in metric_names:
        points = [(s, m[name]) for s, m in run.by_step.items() if name in m]
        if points:
            out[label(name)] = ([s for s, _ in points], [v if math.isfinite(v) else math.nan for _, v in points])
    return out


def _number(value) -> float | None:
    return float(value) if type(value) in (int, float) and math.isfinite(value) else None


# -- sections: each returns None when the run has nothing for it -------------------------------

def reward_section(run: Run) -> Section | None:
    found = series(run, [n for n in names(run, "reward/") if n != "reward/errors"])
    if not found:
        return None
    return Section("Reward terms per step", [("reward", plots.lines("Reward per step", "step", "mean over samples", found))],
                   "reward/total is the combined reward the algorithm trained on; the other lines are the terms.")


def accuracy_points(run: Run) -> tuple[list[float], list[float], str]:
    """(wall seconds, held-out accuracy, source): summary.json's curve, which spans restarts, or,
    for a run that did not finish, eval/accuracy against the time it was logged."""
    curve = run.summary.get("accuracy_curve")
    points = [(_number(p.get("wall_s")), _number(p.get("eval_accuracy")))
              for p in (curve if isinstance(curve, list) else []) if isinstance(p, dict)]
    points = [(w, a) for w, a in points if w is not None and a is not None]
    source = "summary.json accuracy_curve"
    if not points and run.times:
        start = min(run.times.values())
        points = [(run.times[s] - start, m["eval/accuracy"]) for s, m in run.by_step.items()
                  if "eval/accuracy" in m and s in run.times]
        source = "eval/accuracy in metrics.jsonl, against the time it was logged"
    return [w for w, _ in points], [a for _, a in points], source


def accuracy_section(run: Run) -> Section | None:
    wall, acc, source = accuracy_points(run)
    if not wall:
        return None
    png = plots.lines("Held-out accuracy", "wall-clock seconds", "greedy accuracy", {"eval/accuracy": (wall, acc)})
    return Section("Held-out accuracy against wall-clock", [("accuracy", png)], f"From {source}.")


def phase_section(run: Run) -> Section | None:
    timed = [f"timing/{p}" for p in PHASES]
    timed += [n for n in names(run, "timing/") if n not in timed and n not in NOT_STACKED]
    steps = [s for s, m in run.by_step.items() if any(n in m for n in timed)]
    stacks = {n.removeprefix("timing/"): [run.by_step[s].get(n, math.nan) for s in steps] for n in timed}
    stacks = {k: v for k, v in stacks.items() if any(math.isfinite(y) and y > MIN_PHASE_S for y in v)}
    if not stacks:
        return None
    png = plots.stacked_bars("Time per phase", "step", "seconds", steps, stacks)
    return Section("Phase times per step", [("phases", png)],
                   "Each bar is one step (timing/step), split into its phases; phases never above 1 ms are left out.")


def staleness_section(run: Run) -> Section | None:
    found = series(run, ["async/staleness", "async/token_staleness"])
    if not found:
        return None
    return Section("Staleness", [("staleness", plots.lines("Policy versions behind", "step", "versions", found))],
                   "async/staleness: the oldest rollout's lag; async/token_staleness: the mean over tokens.")


def sync_section(run: Run) -> Section | None:
    found = series(run, ["timing/weight_sync", "timing/reload"])
    if not found:
        return None
    return Section("Weight sync and reload", [("weight_sync", plots.lines("Weight sync", "step", "seconds", found))],
                   "timing/weight_sync: the driver's time in the sync phase; timing/reload: the slowest rollout "
                   "actor's in-place reload of the last finished sync.")


def busy_shares(run: Run) -> dict[str, float]:
    """Per role, the mean share of the run's wall-clock its actors spent working (summary busy_s)."""
    busy = run.summary.get("busy_s")
    wall = _number(run.summary.get("total_wall_s")) or _number(run.summary.get("wall_s"))
    if not isinstance(busy, dict) or not wall:
        return {}
    shares = {}
    for role, seconds in busy.items():
        found = [v for v in map(_number, seconds if isinstance(seconds, list) else []) if v is not None]
        if found:
            shares[f"{role} x{len(found)}"] = sum(found) / len(found) / wall
    return shares


def busy_section(run: Run) -> Section | None:
    shares = busy_shares(run)
    if not shares:
        return None
    png = plots.bars("Busy share per role", "share of wall-clock", shares, ymax=1.0)
    return Section("Busy share per role", [("busy", png)],
                   "Mean over a role's actors (x count) of the seconds spent in the role's work, over the run's "
                   "wall-clock (start-up included).")


def resources_section(run: Run) -> Section | None:
    images = []
    for suffix, title, unit in (("_cpu_percent", "CPU per role", "percent of one core"),
                                ("_rss_gib", "Memory per role (RSS)", "GiB")):
        found = series(run, [n for n in names(run, "resources/") if n.endswith(suffix)],
                       label=lambda n, suffix=suffix: n.removeprefix("resources/").removesuffix(suffix))
        if found:
            images.append((f"resources{suffix}", plots.lines(title, "step", unit, found)))
    if not images:
        return None
    return Section("Resources per role", images,
                   "Summed over a role's actor processes and their children; read between the actors' calls, "
                   "so a busy role's reading may be a step late.")


SECTIONS = (("reward", reward_section), ("accuracy", accuracy_section), ("phases", phase_section),
            ("staleness", staleness_section), ("weight-sync", sync_section), ("busy", busy_section),
            ("resources", resources_section))


def build_report(run: Run) -> Report:
    report = Report()
    for key, make in SECTIONS:
        section = make(run)
        if section is None:
            report.skipped.append(key)
        else:
            report.sections.append((key, section))
    if not run.samples:
        report.skipped.append("samples")
    return report


# -- HTML -------------------------------------------------------------------------------------

STYLE = """body{font:14px/1.4 system-ui,sans-serif;margin:2em auto;max-width:1100px;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
img{max-width:100%;display:block;margin:.4em 0}.caption,.note{color:#555;font-size:.92em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:.25em .5em;vertical-align:top;text-align:left}
.samples td{white-space:pre-wrap;word-break:break-word;font-family:ui-monospace,monospace;font-size:.88em;max-width:30em}"""
# Defence in depth behind the escaping: the page may load nothing and run nothing.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def facts(run_dir: Path, run: Run) -> list[tuple[str, str]]:
    """(label, value) rows about the run as a whole, unescaped."""
    s = run.summary
    rows = [("run directory", str(run_dir)),
            ("steps logged", f"{len(run.by_step)} (last: {max(run.by_step, default='none')})")]
    if not s:
        return rows + [("summary.json", "missing or unreadable: the run did not finish")]
    algo = s.get("recipe", {}).get("algo", {}) if isinstance(s.get("recipe"), dict) else {}
    rows += [("algorithm", algo.get("name") if isinstance(algo, dict) else None), ("steps", s.get("steps")),
             ("resumed at step", s.get("start_step") or None), ("resumed from", s.get("resumed_from")),
             ("wall-clock s", s.get("wall_s")),
             ("held-out accuracy", f"{_fmt(s.get('eval_accuracy_before'))} -> {_fmt(s.get('eval_accuracy_after'))}"),
             ("weight sync", s.get("weight_sync")), ("wandb run", s.get("wandb_run_id"))]
    placement = s.get("placement")
    if isinstance(placement, dict):
        rows += [(f"nodes: {role}", ", ".join(str(n)[:12] for n in ids) if isinstance(ids, list) else ids)
                 for role, ids in placement.items()]
    return [(k, _fmt(v)) for k, v in rows if v is not None]


def facts_html(rows: list[tuple[str, str]]) -> str:
    return "<table class=\"facts\">" + "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows) + "</table>"


def section_html(key: str, section: Section) -> str:
    images = "".join(f"<img alt=\"{esc(stem)}\" src=\"data:image/png;base64,{base64.b64encode(png).decode()}\">"
                     for stem, png in section.images)
    caption = f"<p class=\"caption\">{esc(section.caption)}</p>" if section.caption else ""
    return f"<section id=\"{key}\"><h2>{esc(section.title)}</h2>{images}{caption}</section>"


def _cell(value) -> str:
    text = _fmt(value) if value is not None else ""
    return esc(text if len(text) <= MAX_CELL_CHARS else text[:MAX_CELL_CHARS] + " [...]")


def samples_html(samples: list[dict]) -> str:
    columns = ("step", "prompt", "response", "answer", "reward", "error")
    shown = samples[-MAX_SAMPLE_ROWS:]
    head = "".join(f"<th>{c}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_cell(row.get(c))}</td>" for c in columns) + "</tr>" for row in shown)
    note = f"The newest {len(shown)} of {len(samples)} rows of samples.jsonl." if len(shown) < len(samples) else \
        f"{len(samples)} rows of samples.jsonl."
    return (f"<section id=\"samples\"><h2>Sample generations</h2><p class=\"caption\">{note}</p>"
            f"<table class=\"samples\"><tr>{head}</tr>{body}</table></section>")


def render_html(run_dir: Path, run: Run, report: Report) -> str:
    parts = [f"<h1>rewardflow run report</h1>{facts_html(facts(run_dir, run))}"]
    parts += [section_html(key, section) for key, section in report.sections]
    if run.samples:
        parts.append(samples_html(run.samples))
    if report.skipped:
        parts.append(f"<p class=\"note\">Not in this run: {esc(', '.join(report.skipped))}.</p>")
    if run.bad_lines:
        parts.append(f"<p class=\"note\">{run.bad_lines} unreadable line(s) or file(s) skipped.</p>")
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">"
            f"<title>rewardflow report: {esc(run_dir.name)}</title><style>{STYLE}</style></head>\n"
            f"<body>\n" + "\n".join(parts) + "\n</body></html>\n")


def write_report(run_dir: str, out_dir: str | None = None) -> Path:
    """Write `report.html` and one PNG per figure to `out_dir` (default RUN_DIR/report); returns
    the page's path. ConfigError (one line) when RUN_DIR has no metrics.jsonl."""
    run_path = Path(run_dir)
    run = load_run(run_path)
    report = build_report(run)
    out = Path(out_dir) if out_dir else run_path / "report"
    out.mkdir(parents=True, exist_ok=True)
    for _, section in report.sections:
        for stem, png in section.images:
            (out / f"{stem}.png").write_bytes(png)
    page = out / "report.html"
    page.write_text(render_html(run_path.resolve(), run, report), encoding="utf-8")
    return page

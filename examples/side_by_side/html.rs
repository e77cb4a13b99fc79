//! The run's HTML report: what the final table's percentiles and counts
//! hide. Wait-time distributions per pool (CDFs on a log time axis, all
//! callers and per priority class), calls served per second over the run,
//! and callers timed out per pool and class. One self-contained file with
//! inline SVG, so it opens anywhere without network or scripts.
//!
//! Everything drawn comes from one [`Data`] value, built from the run's
//! tallies and embedded as JSON (`<script type="application/json"
//! id="cenote-data">`), so the numbers behind each picture can be read back.

use std::fmt::Write;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::svg::{esc, Axis, Chart};
use super::tally::{Run, Tally, HURRIED, PATIENT};
use super::workload::CLASSES;

/// One colour per pool, in the order they run.
const COLORS: [&str; 4] = ["#1f77b4", "#e07b00", "#2a9d3a", "#c62828"];

/// The numbers behind the report.
#[derive(Serialize)]
struct Data<'a> {
    elapsed_s: f64,
    workers: usize,
    classes: Vec<&'static str>,
    /// The width of the time bins of `offered` and each lane's `served_per_bin`.
    bin_s: f64,
    /// Calls issued to every pool alike, per bin.
    offered: &'a [u64],
    lanes: Vec<LaneData<'a>>,
}

#[derive(Serialize)]
struct LaneData<'a> {
    name: &'static str,
    strategy: &'static str,
    served: u64,
    errors: u64,
    /// Callers per class, `[in a hurry, patient]`.
    callers: &'a [[u64; 2]],
    /// Callers timed out per class, `[in a hurry, patient]`.
    timed_out: &'a [[u64; 2]],
    served_per_bin: &'a [u64],
    /// Callers served per class.
    served_by_class: Vec<u64>,
    /// `[µs, share of served callers who waited at most that long]`.
    wait_cdf: Vec<(u64, f64)>,
    /// The same, per class.
    wait_cdf_by_class: Vec<Vec<(u64, f64)>>,
}

impl<'a> LaneData<'a> {
    fn new(t: &'a Tally) -> Self {
        LaneData {
            name: t.name,
            strategy: t.strategy,
            served: t.done,
            errors: t.errors,
            callers: &t.callers,
            timed_out: &t.timed_out,
            served_per_bin: t.served.counts(),
            served_by_class: t.wait.iter().map(Histogram::len).collect(),
            wait_cdf: cdf(&t.all_waits()),
            wait_cdf_by_class: t.wait.iter().map(cdf).collect(),
        }
    }

    /// The pool's name, and its waiter strategy where the name does not say it.
    fn label(&self) -> String {
        if self.name == self.strategy {
            self.name.to_string()
        } else {
            format!("{} ({} waiters)", self.name, self.strategy)
        }
    }
}

/// Each distinct recorded wait (the top of its histogram bucket) with the
/// share of samples at or below it.
fn cdf(h: &Histogram<u64>) -> Vec<(u64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    h.iter_recorded()
        .map(|v| (v.value_iterated_to(), v.quantile()))
        .collect()
}

/// The whole page for `run` on pools of `workers` workers; `workload` is
/// the description the run printed.
pub fn page(run: &Run, workers: usize, workload: &str) -> Result<String, serde_json::Error> {
    let data = Data {
        elapsed_s: run.elapsed.as_secs_f64(),
        workers,
        classes: CLASSES.iter().map(|(name, _)| *name).collect(),
        bin_s: run.offered.bin().as_secs_f64(),
        offered: run.offered.counts(),
        lanes: run.lanes.iter().map(LaneData::new).collect(),
    };
    // JSON may not hold "</" inside a script element; "<\/" means the same.
    let json = serde_json::to_string(&data)?.replace("</", r"<\/");
    let legend: String = data
        .lanes
        .iter()
        .enumerate()
        .map(|(i, l)| {
            format!(
                r#"<span class="key"><span class="swatch" style="background:{}"></span>{}</span>"#,
                color(i),
                esc(&l.label())
            )
        })
        .collect();
    Ok(format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8"/>
<title>cenote side_by_side: waiter strategies</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 24px auto; max-width: 800px; color: #222; }}
h2 {{ margin-top: 32px; font-size: 18px; }}
.about {{ white-space: pre-line; color: #555; }}
.key {{ margin-right: 16px; white-space: nowrap; }}
.swatch {{ display: inline-block; width: 12px; height: 12px; margin-right: 4px; vertical-align: -1px; }}
.small {{ display: flex; gap: 6px; }}
svg text {{ font: 11px system-ui, sans-serif; fill: #333; }}
svg .label {{ font-size: 12px; }}
svg .grid {{ stroke: #e4e4e4; }}
svg .frame {{ fill: none; stroke: #999; }}
table {{ border-collapse: collapse; margin-top: 12px; }}
td, th {{ padding: 3px 10px; border-bottom: 1px solid #ddd; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
</style>
</head>
<body>
<h1>side_by_side: one workload, four waiter strategies</h1>
<p class="about">{about}
{workers} workers per pool; the run took {elapsed:.1} s.</p>
<p>{legend}</p>
{waits}
{rates}
{timeouts}
<script type="application/json" id="cenote-data">{json}</script>
</body>
</html>
"#,
        about = esc(workload),
        elapsed = data.elapsed_s,
        waits = waits(&data),
        rates = rates(&data),
        timeouts = timeouts(&data),
    ))
}

fn color(lane: usize) -> &'static str {
    COLORS[lane % COLORS.len()]
}

/// Attributes that mark a series as one pool's, with its sample count.
fn series(lane: usize, l: &LaneData, kind: &str, n: u64) -> String {
    format!(
        r#"class="series {kind}" data-lane="{}" data-n="{n}" stroke="{}" stroke-width="1.8" stroke-opacity="0.85""#,
        esc(l.name),
        color(lane)
    )
}

/// Wait-time CDFs: all callers served, then one small chart per class, on
/// one log time axis so they compare at a glance.
fn waits(data: &Data) -> String {
    let all = || data.lanes.iter().flat_map(|l| &l.wait_cdf);
    let min = all().map(|(us, _)| *us).min().unwrap_or(1) as f64;
    let max = all().map(|(us, _)| *us).max().unwrap_or(1000) as f64;
    let mut out = String::from(
        "<h2>Wait for a worker</h2>\n<p>The share of callers served that waited at most a given time \
         for a worker (time on a log scale). Further left is a shorter wait; a line that reaches \
         the top late has a long tail. Callers that timed out are not in these lines but in the \
         last chart.</p>\n",
    );
    out += &cdf_chart(data, "wait-cdf", (760.0, 320.0), (min, max), |l| {
        (&l.wait_cdf, l.served)
    });
    out += "\n<p>By priority class:</p>\n<div class=\"small\">";
    for (class, (name, _)) in CLASSES.iter().enumerate() {
        let _ = write!(out, "<div><b>{}</b><br/>", esc(name));
        let kind = format!("wait-cdf-{name}");
        out += &cdf_chart(data, &kind, (250.0, 220.0), (min, max), |l| {
            (&l.wait_cdf_by_class[class], l.served_by_class[class])
        });
        out += "</div>";
    }
    out + "</div>\n"
}

/// One CDF per pool, of the points and sample count `pick` takes from it,
/// over waits from `min` to `max` µs.
fn cdf_chart<'d>(
    data: &'d Data<'d>,
    kind: &str,
    (width, height): (f64, f64),
    (min, max): (f64, f64),
    pick: impl Fn(&'d LaneData<'d>) -> (&'d [(u64, f64)], u64),
) -> String {
    let x = Axis::log(min, max, "wait for a worker", micros);
    let y = Axis::linear(0.0, 1.0, "callers served", |v| format!("{:.0}%", v * 100.0));
    let span = x.bounds();
    let mut c = Chart::new(kind, width, height, x, y);
    for (i, l) in data.lanes.iter().enumerate() {
        let (points, n) = pick(l);
        c.line(&staircase(points, span), &series(i, l, "cdf", n));
    }
    c.finish()
}

/// A CDF drawn as steps (each bucket's share reached at its top), from 0 at
/// the axis' left end to its last share at the right end.
fn staircase(points: &[(u64, f64)], (left, right): (f64, f64)) -> Vec<(f64, f64)> {
    let mut steps = vec![(left, 0.0)];
    let mut below = 0.0;
    for &(us, share) in points {
        steps.push((us as f64, below));
        steps.push((us as f64, share));
        below = share;
    }
    steps.push((right, below));
    steps
}

/// Calls served per second over the run, per pool, over the calls offered.
fn rates(data: &Data) -> String {
    let per_s = |n: u64| n as f64 / data.bin_s;
    let line = |counts: &[u64]| -> Vec<(f64, f64)> {
        counts
            .iter()
            .enumerate()
            .map(|(i, n)| ((i as f64 + 0.5) * data.bin_s, per_s(*n)))
            .collect()
    };
    let peak = data
        .lanes
        .iter()
        .flat_map(|l| l.served_per_bin)
        .chain(data.offered)
        .max()
        .copied()
        .unwrap_or(0);
    let x = Axis::linear(0.0, data.elapsed_s, "time since the first call", |v| {
        format!("{}s", num(v))
    });
    let y = Axis::linear(0.0, per_s(peak), "calls per second", num);
    let mut c = Chart::new("calls-per-second", 760.0, 300.0, x, y);
    c.line(
        &line(data.offered),
        r##"class="offered" stroke="#777" stroke-width="1.2" stroke-dasharray="4 3""##,
    );
    for (i, l) in data.lanes.iter().enumerate() {
        let n = l.served_per_bin.iter().sum();
        c.line(&line(l.served_per_bin), &series(i, l, "rate", n));
    }
    format!(
        "<h2>Calls served per second</h2>\n<p>Calls each pool served per {} s, by when they ended; \
         dashed: calls offered to every pool alike. Where the offered line rises above the others, \
         a burst overflows the pools and callers queue.</p>\n{}\n",
        num(data.bin_s),
        c.finish()
    )
}

/// Callers timed out per pool and class, in a hurry and patient, as
/// stacked bars, with the exact counts in a table beneath.
fn timeouts(data: &Data) -> String {
    let total = |cell: &[u64; 2]| cell[HURRIED] + cell[PATIENT];
    let peak = data
        .lanes
        .iter()
        .flat_map(|l| l.timed_out.iter().map(total))
        .max()
        .unwrap_or(0);
    let x = Axis::categories(
        data.lanes.iter().map(|l| l.name),
        "pool; bars: priority class",
    );
    // Headroom above the tallest bar for its label.
    let y = Axis::linear(0.0, (peak.max(5) as f64) * 1.1, "callers timed out", num);
    let mut c = Chart::new("timeouts", 760.0, 300.0, x, y);
    let width = 0.8 / CLASSES.len() as f64;
    for (i, l) in data.lanes.iter().enumerate() {
        for (class, (name, _)) in CLASSES.iter().enumerate() {
            let x0 = i as f64 + 0.1 + class as f64 * width;
            let bar = (x0 + 0.1 * width, x0 + 0.9 * width);
            let mut base = 0.0;
            for (patience, who, opacity) in [(HURRIED, "hurried", 1.0), (PATIENT, "patient", 0.4)] {
                let n = l.timed_out[class][patience];
                let attrs = format!(
                    r#"class="timeouts" data-lane="{}" data-class="{}" data-patience="{who}" data-n="{n}" fill="{}" fill-opacity="{opacity}""#,
                    esc(l.name),
                    esc(name),
                    color(i)
                );
                let tip = format!(
                    "{}, {name} priority, {who}: {n} of {} timed out",
                    l.name, l.callers[class][patience]
                );
                c.bar(bar, (base, base + n as f64), &attrs, &tip);
                base += n as f64;
            }
            c.note(((bar.0 + bar.1) / 2.0, base), name);
        }
    }
    let mut table = String::from("<table>\n<tr><th>pool</th><th>served</th><th>errors</th>");
    for (name, _) in CLASSES {
        let _ = write!(table, "<th>{name}: hurried / patient</th>");
    }
    table += "</tr>\n";
    for l in &data.lanes {
        let _ = write!(
            table,
            "<tr><td>{}</td><td>{}</td><td>{}</td>",
            esc(&l.label()),
            l.served,
            l.errors
        );
        for (out, of) in l.timed_out.iter().zip(l.callers) {
            let _ = write!(
                table,
                "<td>{} of {} / {} of {}</td>",
                out[HURRIED], of[HURRIED], out[PATIENT], of[PATIENT]
            );
        }
        table += "</tr>\n";
    }
    table += "</table>";
    format!(
        "<h2>Callers timed out</h2>\n<p>Callers that got no worker within their checkout timeout, \
         per pool and priority class: solid, callers in a hurry; pale, patient ones. Hover a bar \
         for its count.</p>\n{}\n{table}\n",
        c.finish()
    )
}

/// A wait in µs as a short label: 1µs, 10ms, 2s.
fn micros(us: f64) -> String {
    if us >= 1e6 {
        format!("{}s", num(us / 1e6))
    } else if us >= 1e3 {
        format!("{}ms", num(us / 1e3))
    } else {
        format!("{}µs", num(us))
    }
}

/// A number with at most two decimals, without trailing zeros.
fn num(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

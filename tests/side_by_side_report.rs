//! The main job's HTML report says what its table says: a short, overloaded
//! run of the already-built `side_by_side` example, its printed comparison
//! read back, and the report it wrote checked against it — well formed, one
//! wait CDF and one rate series per pool, and the same calls and timeouts
//! per pool, in the embedded JSON and in the SVG alike.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;

mod support {
    pub mod example;
}
use support::example::run_example;

/// How long the run may take: a `--secs 2` run takes a few seconds.
const RUN_LIMIT: Duration = Duration::from_secs(120);

/// One row of the printed comparison.
#[derive(Debug)]
struct Row {
    name: String,
    errors: u64,
    timed_out: [u64; 2],
    callers: [u64; 2],
}

/// "a/b" as two numbers.
fn pair(s: &str) -> [u64; 2] {
    let (a, b) = s
        .split_once('/')
        .unwrap_or_else(|| panic!("{s:?} is not a/b"));
    [a.parse().unwrap(), b.parse().unwrap()]
}

/// The comparison's rows: `pool waiters calls/s util errors a/b of c/d ...`.
fn comparison(out: &str) -> Vec<Row> {
    out.lines()
        .skip_while(|l| *l != "== comparison ==")
        .skip(2)
        .take_while(|l| !l.trim().is_empty())
        .map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(cols.get(6), Some(&"of"), "unexpected row: {line}");
            Row {
                name: cols[0].to_string(),
                errors: cols[4].parse().unwrap(),
                timed_out: pair(cols[5]),
                callers: pair(cols[7]),
            }
        })
        .collect()
}

/// Every start tag has its end tag, in order: self-closing tags and the
/// doctype aside, and a script's content skipped.
fn assert_balanced(html: &str) {
    let mut open: Vec<&str> = Vec::new();
    let mut rest = html;
    while let Some(at) = rest.find('<') {
        rest = &rest[at..];
        let end = rest.find('>').expect("every tag is closed by '>'");
        let tag = &rest[1..end];
        rest = &rest[end + 1..];
        if tag.starts_with('!') || tag.ends_with('/') {
            continue;
        }
        let name = tag.split_whitespace().next().unwrap_or_default();
        if let Some(closing) = name.strip_prefix('/') {
            assert_eq!(
                open.pop(),
                Some(closing),
                "</{closing}> closes the wrong tag"
            );
        } else {
            open.push(name);
            if name == "script" {
                rest = &rest[rest.find("</script>").expect("<script> is closed")..];
            }
        }
    }
    assert!(open.is_empty(), "tags left open: {open:?}");
}

/// The attributes of every `<tag ...>` in `html`.
fn elements<'a>(html: &'a str, tag: &str) -> Vec<HashMap<&'a str, &'a str>> {
    let start = format!("<{tag} ");
    html.match_indices(&start)
        .map(|(at, _)| {
            let body = &html[at + start.len()..];
            let body = &body[..body.find('>').expect("tag is closed")];
            let mut attrs = HashMap::new();
            for part in body.split("\" ") {
                if let Some((name, value)) = part.split_once("=\"") {
                    attrs.insert(name.trim(), value.trim_end_matches(['"', '/']));
                }
            }
            attrs
        })
        .collect()
}

/// The `<svg data-chart="kind">` element's text.
fn chart<'a>(html: &'a str, kind: &str) -> &'a str {
    let at = html
        .find(&format!("data-chart=\"{kind}\""))
        .unwrap_or_else(|| panic!("no chart {kind}"));
    let len = html[at..].find("</svg>").expect("chart closes");
    &html[at..at + len]
}

/// The series of `class` in `chart`, by lane: their sample counts (`data-n`)
/// and number of points.
fn series(chart: &str, class: &str) -> Vec<(String, u64, usize)> {
    elements(chart, "polyline")
        .into_iter()
        .filter(|a| a.get("class") == Some(&class))
        .map(|a| {
            (
                a["data-lane"].to_string(),
                a["data-n"].parse().unwrap(),
                a["points"].split_whitespace().count(),
            )
        })
        .collect()
}

fn u64s(v: &Value) -> Vec<u64> {
    v.as_array()
        .expect("an array")
        .iter()
        .map(|n| n.as_u64().expect("a count"))
        .collect()
}

/// `[in a hurry, patient]` summed over the classes.
fn by_patience(v: &Value) -> [u64; 2] {
    v.as_array()
        .expect("per class")
        .iter()
        .fold([0; 2], |[h, p], c| {
            let c = u64s(c);
            [h + c[0], p + c[1]]
        })
}

#[test]
fn report_matches_the_printed_table() {
    let dir = std::env::temp_dir().join(format!("cenote-side-by-side-{}", std::process::id()));
    let path = dir.join("report.html");
    // Offered load far above capacity and a short checkout timeout for
    // callers in a hurry, so every pool times some out within two seconds.
    let out = run_example(
        "side_by_side",
        &[
            "--secs",
            "2",
            "--load",
            "2.5",
            "--tight-ms",
            "20",
            "--refresh-ms",
            "1000",
            "--report",
            path.to_str().expect("a UTF-8 temp path"),
        ],
        RUN_LIMIT,
    );
    assert_eq!(
        out.lines().last(),
        Some(format!("report: {}", path.display()).as_str()),
        "the run ends by naming its report:\n{out}"
    );
    let html = std::fs::read_to_string(&path).expect("the report was written");
    let _ = std::fs::remove_dir_all(&dir);

    let rows = comparison(&out);
    let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["fifo", "lifo", "priority", "deadline"], "{out}");
    let offered: u64 = out
        .lines()
        .find_map(|l| {
            l.strip_prefix("workload: ")?
                .split_once(" calls")?
                .0
                .parse()
                .ok()
        })
        .expect("the run prints its workload");
    let timed_out: u64 = rows.iter().flat_map(|r| r.timed_out).sum();
    assert!(timed_out > 0, "an overloaded run times callers out:\n{out}");

    assert_balanced(&html);
    assert_eq!(
        html.matches("<svg").count(),
        6,
        "four wait charts, rates, timeouts"
    );

    let marker = r#"<script type="application/json" id="cenote-data">"#;
    let json = &html[html.find(marker).expect("the report embeds its data") + marker.len()..];
    let json = &json[..json.find("</script>").expect("the data block closes")];
    let data: Value = serde_json::from_str(json).expect("the embedded data is JSON");
    let lanes = data["lanes"].as_array().expect("lanes");
    assert_eq!(lanes.len(), rows.len());
    assert_eq!(u64s(&data["offered"]).iter().sum::<u64>(), offered);

    let cdfs = series(chart(&html, "wait-cdf"), "series cdf");
    let rates = series(chart(&html, "calls-per-second"), "series rate");
    let bars = elements(chart(&html, "timeouts"), "rect");
    for (i, (row, lane)) in rows.iter().zip(lanes).enumerate() {
        let name = row.name.as_str();
        assert_eq!(lane["name"], name);
        assert_eq!(
            row.callers[0] + row.callers[1],
            offered,
            "{name}: every call reaches every pool"
        );

        // The embedded numbers are the printed ones.
        assert_eq!(
            by_patience(&lane["callers"]),
            row.callers,
            "{name}: callers"
        );
        assert_eq!(
            by_patience(&lane["timed_out"]),
            row.timed_out,
            "{name}: timeouts"
        );
        assert_eq!(lane["errors"].as_u64(), Some(row.errors), "{name}: errors");
        let served = offered - row.timed_out[0] - row.timed_out[1] - row.errors;
        assert_eq!(lane["served"].as_u64(), Some(served), "{name}: served");
        let per_bin = u64s(&lane["served_per_bin"]);
        assert_eq!(
            per_bin.iter().sum::<u64>(),
            served,
            "{name}: served over time"
        );
        assert_eq!(u64s(&lane["served_by_class"]).iter().sum::<u64>(), served);
        let cdf: Vec<(u64, f64)> = serde_json::from_value(lane["wait_cdf"].clone()).unwrap();
        assert!(
            cdf.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
            "{name}: CDF rises"
        );
        assert_eq!(
            cdf.last().map(|p| p.1),
            Some(1.0),
            "{name}: CDF ends at every caller"
        );

        // The pictures: one CDF and one rate series for this pool, of its calls.
        assert_eq!(cdfs[i].0, name, "wait CDFs in pool order");
        assert_eq!(cdfs[i].1, served, "{name}: CDF of the callers served");
        assert_eq!(rates[i].0, name, "rate series in pool order");
        assert_eq!(
            rates[i].1, served,
            "{name}: rate series of the callers served"
        );
        assert_eq!(rates[i].2, per_bin.len(), "{name}: one rate point per bin");
        for (p, who) in ["hurried", "patient"].into_iter().enumerate() {
            let drawn: u64 = bars
                .iter()
                .filter(|b| {
                    b.get("data-lane") == Some(&name) && b.get("data-patience") == Some(&who)
                })
                .map(|b| b["data-n"].parse::<u64>().unwrap())
                .sum();
            assert_eq!(
                drawn, row.timed_out[p],
                "{name}: {who} callers timed out, as drawn"
            );
        }
    }
    assert_eq!(cdfs.len(), rows.len(), "one wait CDF per pool");
    assert_eq!(rates.len(), rows.len(), "one rate series per pool");
    for class in ["low", "normal", "high"] {
        let drawn = series(chart(&html, &format!("wait-cdf-{class}")), "series cdf");
        let lanes: Vec<&str> = drawn.iter().map(|s| s.0.as_str()).collect();
        assert_eq!(lanes, names, "one {class} CDF per pool");
    }
}

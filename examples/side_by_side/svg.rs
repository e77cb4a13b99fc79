//! Just enough SVG for the report's charts: a plot area with linear,
//! logarithmic or categorical axes, lines and bars. Written out by hand so
//! the report is one file that opens anywhere, with no script and no network.

use std::fmt::Write;

/// Plot area margins: room for tick labels on the left and below.
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 42.0;
/// About how wide one character of a tick label is, in pixels.
const TICK_CHAR_WIDTH: f64 = 6.5;

/// One axis: its range, whether it is logarithmic, where its ticks go.
pub struct Axis {
    lo: f64,
    hi: f64,
    log: bool,
    /// Grid lines at the ticks (not between categories).
    grid: bool,
    label: String,
    ticks: Vec<(f64, String)>,
}

impl Axis {
    /// From 0 (or `lo`) up to at least `max`, ending on a round tick.
    pub fn linear(lo: f64, max: f64, label: &str, fmt: impl Fn(f64) -> String) -> Axis {
        let max = if max > lo { max } else { lo + 1.0 };
        let rough = (max - lo) / 5.0;
        let magnitude = 10f64.powf(rough.log10().floor());
        let step = [1.0, 2.0, 5.0, 10.0]
            .into_iter()
            .map(|m| m * magnitude)
            .find(|s| *s >= rough)
            .unwrap_or(10.0 * magnitude);
        // Less a hair, so a maximum on a tick is not pushed one step up by rounding.
        let hi = lo + ((max - lo) / step - 1e-9).ceil() * step;
        let ticks = (0..)
            .map(|i| lo + f64::from(i) * step)
            .take_while(|v| *v <= hi + step / 2.0)
            .map(|v| (v, fmt(v)))
            .collect();
        Axis {
            lo,
            hi,
            log: false,
            grid: true,
            label: label.into(),
            ticks,
        }
    }

    /// Whole decades around `[min, max]` (both above zero), a tick on each.
    pub fn log(min: f64, max: f64, label: &str, fmt: impl Fn(f64) -> String) -> Axis {
        let lo = min.max(f64::MIN_POSITIVE).log10().floor() as i32;
        let hi = (max.max(min).log10().ceil() as i32).max(lo + 1);
        Axis {
            lo: 10f64.powi(lo),
            hi: 10f64.powi(hi),
            log: true,
            grid: true,
            label: label.into(),
            ticks: (lo..=hi)
                .map(|e| (10f64.powi(e), fmt(10f64.powi(e))))
                .collect(),
        }
    }

    /// One slot per name, `[i, i + 1)` for the i-th, labelled at its middle.
    pub fn categories<'a>(names: impl IntoIterator<Item = &'a str>, label: &str) -> Axis {
        let ticks: Vec<(f64, String)> = names
            .into_iter()
            .enumerate()
            .map(|(i, n)| (i as f64 + 0.5, n.to_string()))
            .collect();
        Axis {
            lo: 0.0,
            hi: ticks.len().max(1) as f64,
            log: false,
            grid: false,
            label: label.into(),
            ticks,
        }
    }

    /// The ends of the axis, in data units.
    pub fn bounds(&self) -> (f64, f64) {
        (self.lo, self.hi)
    }

    /// Where `v` falls, from 0 (low end) to 1 (high end), clamped.
    fn share(&self, v: f64) -> f64 {
        let s = if self.log {
            (v.max(self.lo).log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10())
        } else {
            (v - self.lo) / (self.hi - self.lo)
        };
        s.clamp(0.0, 1.0)
    }
}

/// One chart being drawn; `finish` gives its `<svg>` element.
pub struct Chart {
    out: String,
    x: Axis,
    y: Axis,
    width: f64,
    height: f64,
}

impl Chart {
    /// An empty plot with its axes and grid. `kind` names the chart in a
    /// `data-chart` attribute, so tools can find it.
    pub fn new(kind: &str, width: f64, height: f64, x: Axis, y: Axis) -> Chart {
        let mut c = Chart {
            out: String::new(),
            x,
            y,
            width,
            height,
        };
        let _ = write!(
            c.out,
            r#"<svg xmlns="http://www.w3.org/2000/svg" data-chart="{}" width="{width}" height="{height}" viewBox="0 0 {width} {height}">"#,
            esc(kind)
        );
        c.axes();
        c
    }

    fn px(&self, x: f64) -> f64 {
        LEFT + self.x.share(x) * (self.width - LEFT - RIGHT)
    }

    fn py(&self, y: f64) -> f64 {
        self.height - BOTTOM - self.y.share(y) * (self.height - TOP - BOTTOM)
    }

    fn axes(&mut self) {
        let (left, right) = (LEFT, self.width - RIGHT);
        let (top, bottom) = (TOP, self.height - BOTTOM);
        let mut grid = String::new();
        for (v, label) in &self.y.ticks {
            let y = self.py(*v);
            let _ = write!(
                grid,
                r#"<line class="grid" x1="{left}" x2="{right}" y1="{y:.1}" y2="{y:.1}"/><text class="tick" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                left - 6.0,
                y + 4.0,
                esc(label)
            );
        }
        let mut labelled_until = f64::NEG_INFINITY;
        for (v, label) in &self.x.ticks {
            let x = self.px(*v);
            if self.x.grid {
                let _ = write!(
                    grid,
                    r#"<line class="grid" x1="{x:.1}" x2="{x:.1}" y1="{top}" y2="{bottom}"/>"#
                );
            }
            // On a narrow chart, a label that would run into the one before is left out.
            let half = label.chars().count() as f64 * TICK_CHAR_WIDTH / 2.0;
            if x - half < labelled_until {
                continue;
            }
            labelled_until = x + half + TICK_CHAR_WIDTH;
            let _ = write!(
                grid,
                r#"<text class="tick" x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                bottom + 16.0,
                esc(label)
            );
        }
        let _ = write!(
            grid,
            r#"<rect class="frame" x="{left}" y="{top}" width="{:.1}" height="{:.1}"/><text class="label" x="{:.1}" y="{:.1}" text-anchor="middle">{}</text><text class="label" transform="translate(14 {:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
            right - left,
            bottom - top,
            (left + right) / 2.0,
            self.height - 6.0,
            esc(&self.x.label),
            (top + bottom) / 2.0,
            esc(&self.y.label)
        );
        self.out += &grid;
    }

    /// A line through `points` (data units). `attrs` are written as they
    /// are into the element: the caller's data attributes and style.
    pub fn line(&mut self, points: &[(f64, f64)], attrs: &str) {
        let mut path = String::new();
        for (x, y) in points {
            let _ = write!(path, "{:.1},{:.1} ", self.px(*x), self.py(*y));
        }
        let _ = write!(
            self.out,
            r#"<polyline fill="none" {attrs} points="{}"/>"#,
            path.trim_end()
        );
    }

    /// A bar over `[x0, x1]` from `y0` up to `y1` (data units), with a
    /// tooltip; `attrs` as for [`Chart::line`].
    pub fn bar(&mut self, (x0, x1): (f64, f64), (y0, y1): (f64, f64), attrs: &str, tip: &str) {
        let (left, right) = (self.px(x0), self.px(x1));
        let (top, bottom) = (self.py(y1), self.py(y0));
        let _ = write!(
            self.out,
            r#"<rect {attrs} x="{left:.1}" y="{top:.1}" width="{:.1}" height="{:.1}"><title>{}</title></rect>"#,
            right - left,
            bottom - top,
            esc(tip)
        );
    }

    /// A small label at a data point, centred above it.
    pub fn note(&mut self, (x, y): (f64, f64), text: &str) {
        let _ = write!(
            self.out,
            r#"<text class="note" x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            self.px(x),
            self.py(y) - 3.0,
            esc(text)
        );
    }

    pub fn finish(mut self) -> String {
        self.out += "</svg>";
        self.out
    }
}

/// Text made safe for HTML and SVG content and attribute values.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

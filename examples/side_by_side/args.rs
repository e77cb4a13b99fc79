//! Command-line flags, with defaults that finish in well under a minute on
//! two cores.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::workload::Mix;

pub struct Args {
    pub size: usize,
    pub length: Duration,
    pub refresh: Duration,
    pub seed: u64,
    pub mix: Mix,
    pub etcd: Option<String>,
    /// Where the HTML report goes.
    pub report: PathBuf,
    /// Where to serve the pools' metrics to Prometheus, if anywhere.
    pub metrics: Option<SocketAddr>,
}

const USAGE: &str = "usage: side_by_side [--size N] [--secs S] [--load F] [--burst-load F] \
[--long-share F] [--short-ms N] [--long-ms N] [--tight-ms N] [--loose-ms N] [--tight-share F] \
[--seed N] [--refresh-ms N] [--etcd URL] [--report PATH] [--metrics ADDR]\n\
--report PATH: where to write the HTML report (default: side_by_side.html in the build's target directory)\n\
--metrics ADDR: serve the four pools' metrics to Prometheus at http://ADDR/metrics (build with --features metrics)";

impl Args {
    pub fn parse(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
        let mut a = Args {
            size: 4,
            length: Duration::from_secs(20),
            refresh: Duration::from_millis(250),
            seed: 7,
            mix: Mix::default(),
            etcd: None,
            report: default_report(),
            metrics: None,
        };
        while let Some(flag) = it.next() {
            if flag == "--help" || flag == "-h" {
                return Err(USAGE.into());
            }
            let value = it
                .next()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
            let num = |v: &str| {
                v.parse::<f64>()
                    .map_err(|_| format!("{flag}: {v:?} is not a number\n{USAGE}"))
            };
            match flag.as_str() {
                "--size" => a.size = num(&value)?.max(1.0) as usize,
                "--secs" => a.length = Duration::from_secs_f64(num(&value)?.clamp(1.0, 3600.0)),
                "--load" => a.mix.load = num(&value)?.max(0.01),
                "--burst-load" => a.mix.burst_load = num(&value)?.max(0.01),
                "--long-share" => a.mix.long_share = num(&value)?.clamp(0.0, 1.0),
                "--short-ms" => {
                    a.mix.short = Duration::from_secs_f64(num(&value)?.max(0.0) / 1000.0)
                }
                "--long-ms" => a.mix.long = Duration::from_secs_f64(num(&value)?.max(0.0) / 1000.0),
                "--tight-ms" => {
                    a.mix.tight = Duration::from_secs_f64(num(&value)?.max(1.0) / 1000.0)
                }
                "--loose-ms" => {
                    a.mix.loose = Duration::from_secs_f64(num(&value)?.max(1.0) / 1000.0)
                }
                "--tight-share" => a.mix.tight_share = num(&value)?.clamp(0.0, 1.0),
                "--seed" => a.seed = num(&value)? as u64,
                "--refresh-ms" => a.refresh = Duration::from_millis(num(&value)?.max(50.0) as u64),
                "--etcd" => a.etcd = Some(value),
                "--report" => a.report = PathBuf::from(value),
                "--metrics" => {
                    let addr = value.parse().map_err(|_| {
                        format!(
                            "--metrics: {value:?} is not an address like 127.0.0.1:9464\n{USAGE}"
                        )
                    })?;
                    a.metrics = Some(addr);
                }
                _ => return Err(format!("unknown flag {flag}\n{USAGE}")),
            }
        }
        Ok(a)
    }
}

/// `target/side_by_side.html` of the build that made this binary
/// (`target/<profile>/examples/side_by_side`), wherever the target directory
/// is; `side_by_side.html` in the working directory for a binary run from
/// elsewhere.
fn default_report() -> PathBuf {
    let target = std::env::current_exe().ok().and_then(|exe| {
        let examples = exe.parent()?;
        (examples.file_name()? == "examples").then_some(examples.parent()?.parent()?.to_path_buf())
    });
    target.unwrap_or_default().join("side_by_side.html")
}

/*!
The bench's outputs: raw figures as JSON, a Markdown summary whose tables are
ratios of pgsieve to each peer, and an SVG bar chart of catch-up rates
(plotters, SVG backend only). Written to one directory per run.
*/

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;
use serde::Serialize;

use super::engines::{EngineKind, Measured};
use super::workloads::{Delivered, Filter, Schema, Sizes, Workload};

/// The machine a run was measured on.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Machine {
    /// Logical CPUs.
    pub cpus: usize,
    /// `model name` from /proc/cpuinfo.
    pub cpu_model: String,
    /// Total memory, GiB.
    pub memory_gib: f64,
    /// `uname -sr`-like kernel string.
    pub kernel: String,
    /// `postgres --version`.
    pub postgres: String,
    /// The pgsieve binary measured.
    pub pgsieve_binary: String,
}

/// One engine's result in one case.
#[derive(Debug, Clone, Serialize)]
pub struct EngineResult {
    /// Which engine.
    pub engine: EngineKind,
    /// `None` when it ran; the reason when it was skipped or failed.
    pub skipped: Option<String>,
    /// Figures (absent when skipped).
    pub measured: Option<Measured>,
    /// Leader rows (W1: transactions) per second of catch-up.
    pub rate: Option<f64>,
    /// Rows the engine should have delivered (follower secrets or raw inserts).
    pub expected_rows: i64,
    /// How the follower compares (raw reader: inserts counted).
    pub delivered: Option<Delivered>,
}

/// One workload × filter case.
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    /// Workload.
    pub workload: Workload,
    /// The `secrets` table it ran on.
    pub schema: Schema,
    /// Share of variables in the set.
    pub filter: Filter,
    /// Leader rows (W1: transactions) the workload wrote.
    pub leader_rows: u64,
    /// Time the leader took to write them.
    pub write_seconds: f64,
    /// Per engine.
    pub engines: Vec<EngineResult>,
}

impl CaseResult {
    /// The result of `engine`, if it took part.
    pub fn engine(&self, engine: EngineKind) -> Option<&EngineResult> {
        self.engines.iter().find(|e| e.engine == engine)
    }

    fn label(&self) -> String {
        format!(
            "{:?} {} {}",
            self.workload,
            self.schema.name(),
            self.filter.name()
        )
    }
}

/// W3: grant and revoke latency (pgsieve only).
#[derive(Debug, Clone, Default, Serialize)]
pub struct LatencyResult {
    /// Secrets on the leader.
    pub leader_secrets: i64,
    /// Secret versions each granted variable has.
    pub versions_per_variable: i64,
    /// Grant/revoke rounds.
    pub rounds: usize,
    /// Grant (permit execute) commit → all versions on the follower, ms.
    pub grant_p50_ms: f64,
    /// 99th percentile.
    pub grant_p99_ms: f64,
    /// Revoke (deny) commit → no version left on the follower, ms.
    pub revoke_p50_ms: f64,
    /// 99th percentile.
    pub revoke_p99_ms: f64,
    /// pgsieve's initial copy (half the secrets) until the sentinel arrived.
    pub initial_copy_seconds: f64,
    /// Why native and pglogical have no figure.
    pub peers: String,
}

/// Everything one `pgsieve bench` run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// UTC date of the run (YYYY-MM-DD).
    pub date: String,
    /// `--quick`?
    pub quick: bool,
    /// Sizes used.
    pub sizes: Sizes,
    /// Where.
    pub machine: Machine,
    /// Backlog catch-up cases.
    pub cases: Vec<CaseResult>,
    /// W3, when run.
    pub latency: Option<LatencyResult>,
    /// Fan-out runs (hub vs sidecars vs native by follower count).
    pub fanout: Vec<super::fanout::FanoutResult>,
    /// Caveats (skipped engines, settings that affect every engine).
    pub notes: Vec<String>,
}

fn fmt_rate(r: Option<f64>) -> String {
    r.map_or("–".into(), |r| {
        if r >= 10_000.0 {
            format!("{:.0}k", r / 1000.0)
        } else {
            format!("{r:.0}")
        }
    })
}

fn fmt_ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "N/A".into(),
    }
}

fn fmt_secs(s: Option<f64>) -> String {
    s.map_or("–".into(), |s| format!("{s:.2}"))
}

impl Report {
    /// Every problem any engine reported (wrong counts, leaks), one line each;
    /// empty when every engine delivered exactly what it should.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for case in &self.cases {
            for e in &case.engines {
                if let Some(d) = &e.delivered {
                    for p in &d.problems {
                        out.push(format!("{} {}: {p}", case.label(), e.engine.name()));
                    }
                }
            }
        }
        for f in &self.fanout {
            for p in &f.problems {
                out.push(format!("fan-out {} x{}: {p}", f.mode.name(), f.followers));
            }
        }
        out
    }

    /// The Markdown summary.
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let m = &self.machine;
        let _ = writeln!(
            md,
            "# pgsieve bench — {}{}\n",
            self.date,
            if self.quick { " (quick)" } else { "" }
        );
        let _ = writeln!(
            md,
            "Machine: {} CPUs ({}), {:.0} GiB RAM, {}; {}; pgsieve binary `{}`.\n",
            m.cpus, m.cpu_model, m.memory_gib, m.kernel, m.postgres, m.pgsieve_binary
        );
        let _ = writeln!(
            md,
            "Method: fresh leader + one follower per engine for every case; the workload is \
             written while every engine is paused (pgsieve stopped, subscriptions disabled), then \
             each engine in turn is resumed and timed until a versioned sentinel secret written \
             after the workload is on its follower (backlog catch-up). Follower contents are then \
             checked against the leader (secret rows per variable of the replica set, row counts \
             of the other tables). Rates are leader rows (W1: transactions) per second of \
             catch-up. Ratios are pgsieve ÷ peer: above 1 means pgsieve is faster.\n"
        );
        let _ = writeln!(md, "## Backlog catch-up rate\n");
        let _ = writeln!(
            md,
            "| workload | schema | set holds | leader rows | pgsieve | native | pglogical | ceiling | pgsieve ÷ native | pgsieve ÷ pglogical | pgsieve ÷ ceiling |"
        );
        let _ = writeln!(md, "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        for c in &self.cases {
            let rate = |k| c.engine(k).and_then(|e| e.rate);
            let p = rate(EngineKind::Pgsieve);
            let _ = writeln!(
                md,
                "| {:?} ({}) | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                c.workload,
                c.workload.unit(),
                c.schema.name(),
                c.filter.name(),
                c.leader_rows,
                fmt_rate(p),
                fmt_rate(rate(EngineKind::Native)),
                fmt_rate(rate(EngineKind::Pglogical)),
                fmt_rate(rate(EngineKind::Raw)),
                fmt_ratio(p, rate(EngineKind::Native)),
                fmt_ratio(p, rate(EngineKind::Pglogical)),
                fmt_ratio(p, rate(EngineKind::Raw)),
            );
        }
        let _ = writeln!(md, "\n## Walsender utilization\n");
        let _ = writeln!(
            md,
            "CPU seconds of the leader's walsender serving the engine ÷ catch-up seconds. \
             Near 100 %, the walsender's decoding is what limits the engine (the ceiling); \
             well below, the engine made the walsender wait.\n"
        );
        let _ = writeln!(
            md,
            "| workload | schema | set holds | pgsieve | native | pglogical | ceiling |\n|---|---|---|---:|---:|---:|---:|"
        );
        for c in &self.cases {
            let busy = |k| {
                c.engine(k)
                    .and_then(|e| e.measured.as_ref())
                    .and_then(Measured::walsender_utilization)
                    .map_or("–".into(), |u| format!("{:.0} %", u * 100.0))
            };
            let _ = writeln!(
                md,
                "| {:?} | {} | {} | {} | {} | {} | {} |",
                c.workload,
                c.schema.name(),
                c.filter.name(),
                busy(EngineKind::Pgsieve),
                busy(EngineKind::Native),
                busy(EngineKind::Pglogical),
                busy(EngineKind::Raw),
            );
        }
        let _ = writeln!(md, "\n## CPU seconds and memory during the catch-up\n");
        let _ = writeln!(
            md,
            "Leader = the walsender serving the engine; pgsieve = the pgsieve process (all threads); \
             follower = every PostgreSQL process of the engine's follower. Ratios: pgsieve ÷ native.\n"
        );
        let _ = writeln!(
            md,
            "| workload | schema | set holds | pgsieve leader | pgsieve process | pgsieve follower | pgsieve peak RSS MiB | native leader | native follower | pglogical leader | pglogical follower | ceiling leader | leader CPU ÷ native | total CPU ÷ native |"
        );
        let _ = writeln!(
            md,
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for c in &self.cases {
            let get = |k, f: fn(&Measured) -> Option<f64>| {
                c.engine(k).and_then(|e| e.measured.as_ref()).and_then(f)
            };
            let ws = |m: &Measured| m.walsender_cpu_seconds;
            let fs = |m: &Measured| m.follower_cpu_seconds;
            let ps = |m: &Measured| m.pgsieve_cpu_seconds;
            let total = |k| -> Option<f64> {
                let m = c.engine(k)?.measured.as_ref()?;
                Some(
                    m.walsender_cpu_seconds?
                        + m.follower_cpu_seconds?
                        + m.pgsieve_cpu_seconds.unwrap_or(0.0),
                )
            };
            let rss = c
                .engine(EngineKind::Pgsieve)
                .and_then(|e| e.measured.as_ref())
                .and_then(|m| m.pgsieve_peak_rss_kib)
                .map_or("–".into(), |k| format!("{:.0}", k as f64 / 1024.0));
            let _ = writeln!(
                md,
                "| {:?} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                c.workload,
                c.schema.name(),
                c.filter.name(),
                fmt_secs(get(EngineKind::Pgsieve, ws)),
                fmt_secs(get(EngineKind::Pgsieve, ps)),
                fmt_secs(get(EngineKind::Pgsieve, fs)),
                rss,
                fmt_secs(get(EngineKind::Native, ws)),
                fmt_secs(get(EngineKind::Native, fs)),
                fmt_secs(get(EngineKind::Pglogical, ws)),
                fmt_secs(get(EngineKind::Pglogical, fs)),
                fmt_secs(get(EngineKind::Raw, ws)),
                fmt_ratio(get(EngineKind::Pgsieve, ws), get(EngineKind::Native, ws)),
                fmt_ratio(total(EngineKind::Pgsieve), total(EngineKind::Native)),
            );
        }
        let _ = writeln!(md, "\n## Delivered rows\n");
        let _ = writeln!(
            md,
            "| workload | schema | set holds | engine | expected | delivered | leaked | seconds | check |"
        );
        let _ = writeln!(md, "|---|---|---|---|---:|---:|---:|---:|---|");
        for c in &self.cases {
            for e in &c.engines {
                let (got, leaked, check) = match (&e.skipped, &e.delivered) {
                    (Some(why), _) => ("–".into(), "–".into(), format!("skipped: {why}")),
                    (None, Some(d)) => (
                        d.secret_rows.to_string(),
                        d.leaked_rows.to_string(),
                        if d.problems.is_empty() {
                            "ok".into()
                        } else {
                            format!("**{} problem(s)**: {}", d.problems.len(), d.problems[0])
                        },
                    ),
                    (None, None) => ("–".into(), "–".into(), "–".into()),
                };
                let _ = writeln!(
                    md,
                    "| {:?} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    c.workload,
                    c.schema.name(),
                    c.filter.name(),
                    e.engine.name(),
                    e.expected_rows,
                    got,
                    leaked,
                    fmt_secs(e.measured.as_ref().map(|m| m.catch_up_seconds)),
                    check
                );
            }
        }
        if let Some(l) = &self.latency {
            let _ = writeln!(md, "\n## W3: grant and revoke latency\n");
            let _ = writeln!(
                md,
                "{} secrets on the leader ({} versions per variable), {} rounds; half the variables \
                 in the set; each round grants one variable outside the set (`permit execute` to the \
                 data group) and revokes it again.\n",
                l.leader_secrets, l.versions_per_variable, l.rounds
            );
            let _ = writeln!(md, "| | p50 ms | p99 ms |\n|---|---:|---:|");
            let _ = writeln!(
                md,
                "| grant → all versions on the follower | {:.1} | {:.1} |",
                l.grant_p50_ms, l.grant_p99_ms
            );
            let _ = writeln!(
                md,
                "| revoke → none left on the follower | {:.1} | {:.1} |",
                l.revoke_p50_ms, l.revoke_p99_ms
            );
            let _ = writeln!(
                md,
                "\npgsieve initial copy of that leader: {:.1} s. native, pglogical: N/A — {}",
                l.initial_copy_seconds, l.peers
            );
        }
        if !self.fanout.is_empty() {
            self.fanout_markdown(&mut md);
        }
        if !self.notes.is_empty() {
            let _ = writeln!(md, "\n## Notes\n");
            for n in &self.notes {
                let _ = writeln!(md, "- {n}");
            }
        }
        md
    }

    /// The fan-out section: per follower count, each mode's leader CPU and
    /// catch-up, and the hub's leader CPU as a share of the others'.
    fn fanout_markdown(&self, md: &mut String) {
        use super::fanout::FanoutMode;
        let transactions = self.fanout.first().map_or(0, |f| f.transactions);
        let _ = writeln!(
            md,
            "\n## Fan-out: leader cost per follower count\n\n\
             W1 backlog of {transactions} single-row transactions, half the variables in the set; \
             leader CPU = every leader process but the bench's session, during the catch-up.\n"
        );
        let _ = writeln!(
            md,
            "| followers | mode | catch-up s | leader CPU s | pgsieve CPU s | check |\n\
             |---:|---|---:|---:|---:|---|"
        );
        for f in &self.fanout {
            let _ = writeln!(
                md,
                "| {} | {} | {:.2} | {:.2} | {} | {} |",
                f.followers,
                f.mode.name(),
                f.catch_up_seconds,
                f.leader_cpu_seconds,
                fmt_secs(f.pgsieve_cpu_seconds),
                if f.problems.is_empty() {
                    "ok".to_owned()
                } else {
                    format!("**{} problem(s)**", f.problems.len())
                }
            );
        }
        let cpu = |mode: FanoutMode, n: usize| {
            self.fanout
                .iter()
                .find(|f| f.mode == mode && f.followers == n)
                .map(|f| f.leader_cpu_seconds)
        };
        let mut counts: Vec<usize> = self.fanout.iter().map(|f| f.followers).collect();
        counts.dedup();
        let _ = writeln!(
            md,
            "\n| followers | leader CPU: hub ÷ sidecars | hub ÷ native | hub(N) ÷ hub(1) |\n|---:|---:|---:|---:|"
        );
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
            _ => "–".to_owned(),
        };
        for n in counts {
            let hub = cpu(FanoutMode::Hub, n);
            let _ = writeln!(
                md,
                "| {n} | {} | {} | {} |",
                ratio(hub, cpu(FanoutMode::Sidecars, n)),
                ratio(hub, cpu(FanoutMode::Native, n)),
                ratio(hub, cpu(FanoutMode::Hub, 1))
            );
        }
    }

    /// The JSON text (every raw figure).
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// Draws the catch-up rates as grouped bars (one group per case) into `path`.
    pub fn plot(&self, path: &Path) -> Result<(), String> {
        let engines: Vec<EngineKind> = EngineKind::ALL
            .into_iter()
            .filter(|k| {
                self.cases
                    .iter()
                    .any(|c| c.engine(*k).and_then(|e| e.rate).is_some())
            })
            .collect();
        if self.cases.is_empty() || engines.is_empty() {
            return Ok(());
        }
        let max = self
            .cases
            .iter()
            .flat_map(|c| c.engines.iter().filter_map(|e| e.rate))
            .fold(1.0f64, f64::max);
        let n = self.cases.len();
        let labels: Vec<String> = self.cases.iter().map(CaseResult::label).collect();
        let root = SVGBackend::new(path, (160 * n as u32 + 200, 480)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "backlog catch-up (leader rows/s; W1: txn/s)",
                ("sans-serif", 20),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..n as f64, 0f64..max * 1.1)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n * 2 + 1)
            .x_label_formatter(&|x| {
                let i = x.floor() as usize;
                if (x - x.floor() - 0.5).abs() < 0.01 {
                    labels.get(i).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .y_label_formatter(&|y| format!("{:.0}k", y / 1000.0))
            .draw()
            .map_err(|e| e.to_string())?;
        let palette = [
            RGBColor(0x1f, 0x77, 0xb4),
            RGBColor(0xff, 0x7f, 0x0e),
            RGBColor(0x2c, 0xa0, 0x2c),
            RGBColor(0x7f, 0x7f, 0x7f),
        ];
        let width = 0.8 / engines.len() as f64;
        for (j, kind) in engines.iter().enumerate() {
            let color = palette[j % palette.len()];
            let bars: Vec<Rectangle<(f64, f64)>> = self
                .cases
                .iter()
                .enumerate()
                .filter_map(|(i, c)| {
                    let rate = c.engine(*kind)?.rate?;
                    let x0 = i as f64 + 0.1 + j as f64 * width;
                    Some(Rectangle::new(
                        [(x0, 0.0), (x0 + width * 0.9, rate)],
                        color.filled(),
                    ))
                })
                .collect();
            chart
                .draw_series(bars)
                .map_err(|e| e.to_string())?
                .label(kind.name())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled())
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Writes `report.md`, `report.json` and `catch-up.svg` into `dir`.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("report.md"), self.markdown())?;
        std::fs::write(dir.join("report.json"), self.json())?;
        self.plot(&dir.join("catch-up.svg"))
            .map_err(std::io::Error::other)?;
        Ok(())
    }
}

/*!
Lines → text: `--format json` (one object per line, the README's schema) or
`--format pretty` (aligned columns, ANSI colours when stdout is a terminal and
`NO_COLOR` is unset). Renders what it is given; redaction happened before.
*/

use std::fmt::Write as _;

use super::line::{Decision, Fields, Line};

/// Output format of `pgsieve tap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TapFormat {
    /// Aligned, coloured lines for people.
    Pretty,
    /// One JSON object per line (schema in the README).
    Json,
}

/// Turns lines into text, keeping column widths stable across lines.
#[derive(Debug)]
pub struct Renderer {
    format: TapFormat,
    color: bool,
    lsn_width: usize,
    table_width: usize,
    label_width: usize,
}

const RESET: &str = "\x1b[0m";
const BOLD: &str = "\x1b[1m";
const DIM: &str = "\x1b[2m";
const RED: &str = "\x1b[31m";
const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";
const MAGENTA: &str = "\x1b[35m";
const CYAN: &str = "\x1b[36m";

impl Renderer {
    /// A renderer; `labels` are the follower names decisions will carry (for alignment).
    pub fn new<'a>(format: TapFormat, color: bool, labels: impl Iterator<Item = &'a str>) -> Self {
        Self {
            format,
            color,
            lsn_width: 9,
            table_width: 16,
            label_width: labels.map(str::len).max().unwrap_or(4),
        }
    }

    /// The text of `line`, newline-terminated (pretty lines may span several rows).
    pub fn render(&mut self, line: &Line) -> String {
        match self.format {
            TapFormat::Json => {
                let mut s = serde_json::to_string(line).unwrap_or_else(|e| {
                    format!("{{\"type\":\"error\",\"error\":{:?}}}", e.to_string())
                });
                s.push('\n');
                s
            }
            TapFormat::Pretty => self.pretty(line),
        }
    }

    fn paint(&self, style: &str, text: &str) -> String {
        if self.color {
            format!("{style}{text}{RESET}")
        } else {
            text.to_owned()
        }
    }

    fn pad(&self, style: &str, text: &str, width: usize) -> String {
        let padded = format!("{text:<width$}");
        self.paint(style, &padded)
    }

    fn pretty(&mut self, line: &Line) -> String {
        let mut out = String::new();
        match line {
            Line::Begin(b) => {
                let _ = writeln!(
                    out,
                    "{}  xid {}  commit {}  {}{}",
                    self.paint(BOLD, "BEGIN "),
                    b.xid,
                    b.commit_lsn,
                    self.paint(DIM, &b.commit_time),
                    if b.streamed { "  (streamed)" } else { "" }
                );
            }
            Line::Commit(c) => {
                let plural = if c.changes == 1 { "" } else { "s" };
                let _ = writeln!(
                    out,
                    "{}  xid {}  end {}  {} change{plural}",
                    self.paint(BOLD, "COMMIT"),
                    c.xid,
                    c.end_lsn,
                    c.changes
                );
            }
            Line::Change(c) => {
                self.lsn_width = self.lsn_width.max(c.lsn.len());
                self.table_width = self.table_width.max(c.table.len());
                let op_style = match c.op {
                    "insert" => GREEN,
                    "update" => YELLOW,
                    _ => RED,
                };
                let mut row = fields_text(&c.key);
                if let Some(old) = &c.old_key {
                    let _ = write!(row, "  (old {})", fields_text(old));
                }
                if !c.columns.0.is_empty() {
                    let _ = write!(row, " {} {}", self.paint(DIM, "|"), fields_text(&c.columns));
                }
                let _ = writeln!(
                    out,
                    "  {}  {}  {}  {row}",
                    self.pad(DIM, &c.lsn, self.lsn_width),
                    self.pad(op_style, c.op, 6),
                    self.pad(CYAN, &c.table, self.table_width),
                );
                self.decisions(&mut out, &c.decisions);
            }
            Line::Truncate(t) => {
                self.lsn_width = self.lsn_width.max(t.lsn.len());
                let _ = writeln!(
                    out,
                    "  {}  {}  {}{}{}",
                    self.pad(DIM, &t.lsn, self.lsn_width),
                    self.pad(RED, "truncate", 6),
                    t.tables.join(", "),
                    if t.cascade { " CASCADE" } else { "" },
                    if t.restart_identity {
                        " RESTART IDENTITY"
                    } else {
                        ""
                    }
                );
            }
            Line::Effect(e) => {
                let (sign, style) = if e.now_in { ("+", GREEN) } else { ("-", RED) };
                let versions = match e.leader_versions {
                    Some(1) => "  (1 version on the leader)".to_owned(),
                    Some(n) => format!("  ({n} versions on the leader)"),
                    None => String::new(),
                };
                let _ = writeln!(
                    out,
                    "  {}  {}: {}{}",
                    self.paint(MAGENTA, "effect"),
                    e.follower,
                    self.paint(style, &format!("{sign}{}", e.variable)),
                    self.paint(DIM, &versions)
                );
            }
            Line::Message(m) => {
                let kind = if m.transactional {
                    "transactional"
                } else {
                    "non-transactional"
                };
                let xid = m.xid.map(|x| format!("  xid {x}")).unwrap_or_default();
                let _ = writeln!(
                    out,
                    "{}  {}{xid}  {kind}  {}: {:?}",
                    self.paint(MAGENTA, "MESSAGE"),
                    self.paint(DIM, &m.lsn),
                    m.prefix,
                    m.content
                );
            }
        }
        out
    }

    fn decisions(&self, out: &mut String, decisions: &[Decision]) {
        let indent = " ".repeat(2 + self.lsn_width + 2);
        let unfiltered = decisions
            .iter()
            .all(|d| d.action == "forward" && d.reason.starts_with("table "));
        if unfiltered {
            if let Some(d) = decisions.first() {
                let _ = writeln!(
                    out,
                    "{indent}{}",
                    self.paint(DIM, &format!("→ every follower ({})", d.reason))
                );
            }
            return;
        }
        for d in decisions {
            let style = match d.action {
                "forward" => GREEN,
                "drop" => RED,
                _ => YELLOW,
            };
            let _ = writeln!(
                out,
                "{indent}{}  {}  {}",
                self.pad(BOLD, &d.follower, self.label_width),
                self.pad(style, d.action, 7),
                self.paint(DIM, &d.reason)
            );
        }
    }
}

/// `name=value` pairs; NULL as `NULL`, values with spaces or quotes quoted.
fn fields_text(fields: &Fields) -> String {
    let mut out = String::new();
    for (n, (name, value)) in fields.0.iter().enumerate() {
        if n > 0 {
            out.push(' ');
        }
        match value {
            None => {
                let _ = write!(out, "{name}=NULL");
            }
            Some(v) if is_plain(v) => {
                let _ = write!(out, "{name}={v}");
            }
            Some(v) => {
                let _ = write!(out, "{name}={v:?}");
            }
        }
    }
    out
}

fn is_plain(v: &str) -> bool {
    let placeholder =
        v == "<unchanged toast>" || (v.starts_with("<redacted ") && v.ends_with(" bytes>"));
    placeholder
        || (!v.is_empty()
            && v.chars()
                .all(|c| !c.is_whitespace() && !c.is_control() && c != '"'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::tap::line::{ChangeLine, Decision};

    fn change() -> Line {
        Line::Change(ChangeLine {
            lsn: "0/1A2B".into(),
            xid: 7,
            commit_time: "2026-01-01T00:00:00.000000Z".into(),
            table: "public.secrets".into(),
            op: "insert",
            key: Fields(vec![
                ("resource_id".into(), Some("a:variable:x".into())),
                ("version".into(), Some("3".into())),
            ]),
            old_key: None,
            columns: Fields(vec![
                ("value".into(), Some("<redacted 60 bytes>".into())),
                ("expires_at".into(), None),
            ]),
            decisions: vec![Decision {
                follower: "east".into(),
                replica_set: "east".into(),
                action: "drop",
                reason: "no role".into(),
            }],
        })
    }

    #[test]
    fn pretty_without_color_is_plain_aligned_text() {
        let mut r = Renderer::new(TapFormat::Pretty, false, ["east"].into_iter());
        let text = r.render(&change());
        assert_eq!(
            text,
            "  0/1A2B     insert  public.secrets    resource_id=a:variable:x version=3 | value=<redacted 60 bytes> expires_at=NULL\n             east  drop     no role\n"
        );
        let mut colored = Renderer::new(TapFormat::Pretty, true, ["east"].into_iter());
        assert!(colored.render(&change()).contains(RESET));
    }

    #[test]
    fn json_is_one_line() {
        let mut r = Renderer::new(TapFormat::Json, false, std::iter::empty());
        let text = r.render(&change());
        assert!(text.ends_with("}\n") && text.matches('\n').count() == 1);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        assert_eq!(v["type"], "change");
        assert_eq!(v["columns"]["value"], "<redacted 60 bytes>");
        assert!(v["old_key"].is_null());
    }
}

/*!
The tap's output lines as data: what `--format json` serialises one per line
and `--format pretty` lays out for people. The field names here are the JSON
schema documented in the README; change them only together with it.

Values are already redacted when a line is built (`redact.rs`), so neither
renderer can leak a secret by accident.
*/

use serde::Serialize;
use serde::ser::SerializeMap;

/// One line of tap output.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Line {
    /// A leader transaction starts.
    Begin(BeginLine),
    /// One row change with the decision per follower.
    Change(ChangeLine),
    /// A TRUNCATE.
    Truncate(TruncateLine),
    /// A variable entered or left a replica set at the commit.
    Effect(EffectLine),
    /// The leader transaction committed.
    Commit(CommitLine),
    /// A `pg_logical_emit_message` record.
    Message(MessageLine),
}

/// `{"type":"begin",…}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BeginLine {
    /// WAL position of the message.
    pub lsn: String,
    /// Top-level transaction id.
    pub xid: u32,
    /// LSN of the commit record.
    pub commit_lsn: String,
    /// Commit time, RFC 3339 UTC with microseconds.
    pub commit_time: String,
    /// Whether the transaction arrived streamed (in chunks, before its commit).
    pub streamed: bool,
}

/// `{"type":"change",…}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChangeLine {
    /// WAL position of the message (a streamed transaction's changes carry its Stream Commit's).
    pub lsn: String,
    /// Top-level transaction id.
    pub xid: u32,
    /// Commit time of the transaction.
    pub commit_time: String,
    /// `schema.table`.
    pub table: String,
    /// `insert`, `update` or `delete`.
    pub op: &'static str,
    /// Replica-identity columns (of the new row; of the old row for a delete).
    pub key: Fields,
    /// Key of the old row when an update changed the key, else null.
    pub old_key: Option<Fields>,
    /// The other columns (empty for a delete that carries only the key).
    pub columns: Fields,
    /// One entry per follower.
    pub decisions: Vec<Decision>,
}

/// Where one change goes for one follower, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// The follower's configured name.
    pub follower: String,
    /// Its replica set as configured, or `full` for a follower without one.
    pub replica_set: String,
    /// `forward`, `drop`, or `unknown` (no model).
    pub action: &'static str,
    /// Why: the model's explanation chain for `secrets` rows.
    pub reason: String,
}

/// `{"type":"truncate",…}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TruncateLine {
    /// WAL position of the message.
    pub lsn: String,
    /// Top-level transaction id.
    pub xid: u32,
    /// Commit time of the transaction.
    pub commit_time: String,
    /// `schema.table` of every truncated relation.
    pub tables: Vec<String>,
    /// TRUNCATE … CASCADE.
    pub cascade: bool,
    /// TRUNCATE … RESTART IDENTITY.
    pub restart_identity: bool,
}

/// `{"type":"effect",…}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EffectLine {
    /// WAL position of the commit message.
    pub lsn: String,
    /// Top-level transaction id.
    pub xid: u32,
    /// Commit time of the transaction.
    pub commit_time: String,
    /// The follower whose set changed.
    pub follower: String,
    /// Its replica set as configured.
    pub replica_set: String,
    /// The variable.
    pub variable: String,
    /// `true`: now in the set (re-synced from the leader); `false`: purged.
    pub now_in: bool,
    /// `secrets` rows of the variable on the leader now (null without a leader session).
    pub leader_versions: Option<i64>,
}

/// `{"type":"commit",…}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CommitLine {
    /// WAL position of the message.
    pub lsn: String,
    /// Top-level transaction id.
    pub xid: u32,
    /// LSN of the commit record.
    pub commit_lsn: String,
    /// First byte after the commit record.
    pub end_lsn: String,
    /// Commit time.
    pub commit_time: String,
    /// Row changes in the transaction (all of them, printed or not).
    pub changes: u64,
}

/// `{"type":"message",…}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MessageLine {
    /// WAL position of the message.
    pub lsn: String,
    /// Transaction id (null for a non-transactional message outside a stream).
    pub xid: Option<u32>,
    /// Emitted with `transactional = true`.
    pub transactional: bool,
    /// The message's prefix.
    pub prefix: String,
    /// Its content (lossy UTF-8).
    pub content: String,
}

/// Column name → value (`None` = NULL), in table order; serialises as a JSON object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fields(pub Vec<(String, Option<String>)>);

impl Fields {
    /// The value of column `name`, if present and not NULL.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_deref())
    }
}

impl Serialize for Fields {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_keeps_column_order_and_tags_the_type() {
        let line = Line::Effect(EffectLine {
            lsn: "0/1".into(),
            xid: 7,
            commit_time: "t".into(),
            follower: "east".into(),
            replica_set: "east".into(),
            variable: "a:variable:v".into(),
            now_in: true,
            leader_versions: Some(3),
        });
        let json = serde_json::to_string(&line).unwrap_or_default();
        assert!(
            json.starts_with(r#"{"type":"effect","lsn":"0/1","xid":7"#),
            "{json}"
        );
        let fields = Fields(vec![("z".into(), None), ("a".into(), Some("1".into()))]);
        assert_eq!(
            serde_json::to_string(&fields).unwrap_or_default(),
            r#"{"z":null,"a":"1"}"#
        );
    }
}

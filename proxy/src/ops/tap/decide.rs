/*!
Per-follower decisions as the tap prints them: who receives a change and why.

The tap decides nothing itself: the filter stage has already set each
change's mask, and the reason is the model's own explanation
(`Model::explain`), so what the tap shows is what `pgsieve run` does.
*/

use pgsieve_filters::Model;

use super::line::Decision;
use crate::config::Config;
use crate::txn::RowChange;

/// A follower as the tap reports on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The follower's configured name.
    pub follower: String,
    /// Its replica set as configured, or `full`.
    pub replica_set: String,
    /// Its bit in the model's set masks; `None` for a full follower.
    pub bit: Option<usize>,
}

/// Label of a follower without a replica set.
pub const FULL: &str = "full";

/// Every configured follower, in config order.
#[derive(Debug, Clone, Default)]
pub struct Targets(pub Vec<Target>);

impl Targets {
    /// Followers of `config`; set bits follow `Config::replica_sets`, as in `run`.
    pub fn from_config(config: &Config) -> Targets {
        let (_, bits) = config.replica_sets();
        Targets(
            config
                .followers
                .iter()
                .zip(bits)
                .map(|(f, bit)| Target {
                    follower: f.name.clone(),
                    replica_set: f
                        .replica_set
                        .as_ref()
                        .map_or_else(|| FULL.to_owned(), |s| s.name.clone()),
                    bit,
                })
                .collect(),
        )
    }

    /// The followers holding set bit `bit` (several when they share a set).
    pub fn for_bit(&self, bit: usize) -> impl Iterator<Item = &Target> {
        self.0.iter().filter(move |t| t.bit == Some(bit))
    }

    /// The decisions for `change` for every target `keep` accepts. `model` is
    /// `None` when the tap could not build one (capture without a leader).
    pub fn decisions(
        &self,
        change: &RowChange,
        resource_id: Option<&str>,
        model: Option<&Model>,
        keep: impl Fn(&Target) -> bool,
    ) -> Vec<Decision> {
        let is_secrets = change.relation.name == "secrets";
        self.0
            .iter()
            .filter(|t| keep(t))
            .map(|t| {
                let (action, reason) = match (is_secrets, t.bit, model) {
                    (false, _, _) => (
                        "forward",
                        format!("table {} is not filtered", change.relation.name),
                    ),
                    (true, None, _) => ("forward", "full follower: receives every row".into()),
                    (true, Some(_), None) => ("unknown", "model unavailable".into()),
                    (true, Some(bit), Some(model)) => {
                        let action = if change.mask.contains(bit) {
                            "forward"
                        } else {
                            "drop"
                        };
                        let reason = match resource_id {
                            Some(id) => explain(model, id, bit),
                            None => "secrets row without resource_id".into(),
                        };
                        (action, reason)
                    }
                };
                Decision {
                    follower: t.follower.clone(),
                    replica_set: t.replica_set.clone(),
                    action,
                    reason,
                }
            })
            .collect()
    }
}

/// The model's explanation without its `<id> in <set>: ` preamble.
fn explain(model: &Model, resource_id: &str, bit: usize) -> String {
    let e = model.explain(resource_id, bit);
    let text = e.to_string();
    let verdict = if e.is_in { "in" } else { "out of" };
    let preamble = format!("{} {verdict} {}: ", e.resource_id, e.set);
    match text.strip_prefix(&preamble) {
        Some(reason) => reason.to_owned(),
        None => text,
    }
}

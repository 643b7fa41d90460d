/*!
`--table`, `--replica-set`, `--variable` and `--xid`: which lines the tap
prints. Each filter given narrows the output; repeating a filter widens it
(any of the values). Filtering changes what is printed, never what the model
is fed, so decisions stay exact.
*/

use super::decide::Target;
use super::line::Fields;

/// The printing filters of one tap run (empty = no restriction).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Table names, bare (`secrets`) or qualified (`public.secrets`).
    pub tables: Vec<String>,
    /// Follower names or replica-set names (`full` for followers without one).
    pub replica_sets: Vec<String>,
    /// Resource ids, matched against a change's `resource_id` column and an effect's variable.
    pub variables: Vec<String>,
    /// Top-level transaction ids.
    pub xids: Vec<u32>,
}

impl Selection {
    /// Whether the transaction `xid` is of interest.
    pub fn xid(&self, xid: u32) -> bool {
        self.xids.is_empty() || self.xids.contains(&xid)
    }

    /// Whether a table (`schema.table` form) is of interest.
    pub fn table(&self, qualified: &str) -> bool {
        let bare = qualified.rsplit_once('.').map_or(qualified, |(_, t)| t);
        self.tables.is_empty()
            || self
                .tables
                .iter()
                .any(|t| t == qualified || t.as_str() == bare)
    }

    /// Whether a follower's decisions and effects are of interest.
    pub fn target(&self, target: &Target) -> bool {
        self.replica_sets.is_empty()
            || self
                .replica_sets
                .iter()
                .any(|s| *s == target.follower || *s == target.replica_set)
    }

    /// Whether a row change is of interest.
    pub fn change(&self, xid: u32, qualified_table: &str, key: &Fields, columns: &Fields) -> bool {
        self.xid(xid)
            && self.table(qualified_table)
            && (self.variables.is_empty()
                || key
                    .get("resource_id")
                    .or_else(|| columns.get("resource_id"))
                    .is_some_and(|id| self.variables.iter().any(|v| v == id)))
    }

    /// Whether an effect (always about `secrets`) is of interest.
    pub fn effect(&self, xid: u32, target: &Target, variable: &str) -> bool {
        self.xid(xid)
            && self.table("public.secrets")
            && self.target(target)
            && (self.variables.is_empty() || self.variables.iter().any(|v| v == variable))
    }

    /// Whether a TRUNCATE of `tables` is of interest.
    pub fn truncate(&self, xid: u32, tables: &[String]) -> bool {
        self.xid(xid) && self.variables.is_empty() && tables.iter().any(|t| self.table(t))
    }

    /// Whether a logical message is of interest: not when tables or variables
    /// are asked for; with `--xid`, only messages of those transactions.
    pub fn message(&self, xid: Option<u32>) -> bool {
        self.tables.is_empty()
            && self.variables.is_empty()
            && (self.xids.is_empty() || xid.is_some_and(|x| self.xids.contains(&x)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> Fields {
        Fields(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), Some((*v).to_owned())))
                .collect(),
        )
    }

    #[test]
    fn empty_selection_takes_everything() {
        let s = Selection::default();
        assert!(s.change(1, "public.roles", &Fields::default(), &Fields::default()));
        assert!(s.message(None));
    }

    #[test]
    fn tables_match_bare_or_qualified_and_variables_match_resource_id() {
        let s = Selection {
            tables: vec!["secrets".into()],
            variables: vec!["a:variable:x".into()],
            ..Selection::default()
        };
        let key = fields(&[("resource_id", "a:variable:x"), ("version", "1")]);
        assert!(s.change(1, "public.secrets", &key, &Fields::default()));
        assert!(!s.change(1, "public.permissions", &key, &Fields::default()));
        let other = fields(&[("resource_id", "a:variable:y")]);
        assert!(!s.change(1, "public.secrets", &other, &Fields::default()));
        assert!(!s.message(None));
    }

    #[test]
    fn xids_and_replica_sets() {
        let s = Selection {
            xids: vec![7],
            replica_sets: vec!["east".into()],
            ..Selection::default()
        };
        let east = Target {
            follower: "east".into(),
            replica_set: "x".into(),
            bit: Some(0),
        };
        let west = Target {
            follower: "west".into(),
            replica_set: "y".into(),
            bit: Some(1),
        };
        assert!(s.target(&east) && !s.target(&west));
        assert!(s.effect(7, &east, "v") && !s.effect(8, &east, "v"));
        assert!(s.message(Some(7)) && !s.message(None));
    }
}

//! Every fact pgsieve relies on about Conjur's tables: which schema they live
//! in, which tables feed the replica-set model, which one is filtered, and
//! what a publication must carry for the decisions to be right.
//!
//! Tables are recognised by schema *and* name: Conjur's policy loader creates
//! throwaway `policy_loader_*` schemas with tables of the same names, and
//! those must never feed the model or be filtered as `secrets`.

/// The Conjur tables pgsieve publishes: all 14 of Conjur's tables.
///
/// Never `FOR ALL TABLES`: every policy load creates throwaway `policy_loader_*` schemas
/// whose key-less tables would then make the loader's own DELETEs fail.
///
/// `schema_migrations` is left out on purpose: it records which migrations ran *on that
/// database*. DDL is not replicated, so each follower's schema (and the record of how it
/// got there) belongs to the follower; copying the leader's rows would claim migrations
/// the follower never ran.
///
/// `policy_log` is included (Conjur's own "Full" set leaves it out of comparisons, but it
/// is cheap and keeps followers complete); it has no primary key, hence
/// `REPLICA IDENTITY FULL` below.
pub const CONJUR_TABLES: &[&str] = &[
    "roles",
    "resources",
    "role_memberships",
    "permissions",
    "annotations",
    "secrets",
    "credentials",
    "policy_versions",
    "policy_log",
    "resources_textsearch",
    "host_factory_tokens",
    "authenticator_configs",
    "issuers",
    "slosilo_keystore",
];

/// The schema Conjur's tables live in.
pub const SCHEMA: &str = "public";

/// What a table is to the filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConjurTable {
    /// `public.secrets`: filtered per follower.
    Secrets,
    /// `public.role_memberships`: feeds the model.
    RoleMemberships,
    /// `public.permissions`: feeds the model.
    Permissions,
    /// `public.resources`: feeds the model.
    Resources,
    /// Anything else: forwarded unchanged.
    Other,
}

/// The tables the decisions depend on, as `(name, kind)`.
pub const DECISION_TABLES: [(&str, ConjurTable); 4] = [
    ("secrets", ConjurTable::Secrets),
    ("role_memberships", ConjurTable::RoleMemberships),
    ("permissions", ConjurTable::Permissions),
    ("resources", ConjurTable::Resources),
];

/// Classifies a table by schema and name.
pub fn classify(schema: &str, name: &str) -> ConjurTable {
    if schema != SCHEMA {
        return ConjurTable::Other;
    }
    DECISION_TABLES
        .iter()
        .find(|(n, _)| *n == name)
        .map_or(ConjurTable::Other, |(_, kind)| *kind)
}

/// Whether `schema.name` is the filtered `secrets` table.
pub fn is_secrets(schema: &str, name: &str) -> bool {
    classify(schema, name) == ConjurTable::Secrets
}

/// `public.secrets`, quoted.
pub const SECRETS_QUALIFIED: &str = "\"public\".\"secrets\"";

/// What the leader's publication carries, as read from its catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicationFacts {
    /// `FOR ALL TABLES`.
    pub all_tables: bool,
    /// Which operations are published (`insert`, `update`, `delete`, `truncate`) and which not.
    pub operations: Vec<(&'static str, bool)>,
    /// Published tables as `schema.table`.
    pub tables: std::collections::BTreeSet<String>,
}

impl PublicationFacts {
    /// Reads publication `name`'s facts; `None` when it does not exist.
    pub async fn read(
        leader: &tokio_postgres::Client,
        name: &str,
    ) -> Result<Option<PublicationFacts>, tokio_postgres::Error> {
        let Some(row) = leader
            .query_opt(
                "SELECT puballtables, pubinsert, pubupdate, pubdelete, pubtruncate \
                 FROM pg_catalog.pg_publication WHERE pubname = $1",
                &[&name],
            )
            .await?
        else {
            return Ok(None);
        };
        let tables = leader
            .query(
                "SELECT schemaname::text || '.' || tablename::text \
                 FROM pg_catalog.pg_publication_tables WHERE pubname = $1",
                &[&name],
            )
            .await?
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect();
        Ok(Some(PublicationFacts {
            all_tables: row.get(0),
            operations: vec![
                ("insert", row.get(1)),
                ("update", row.get(2)),
                ("delete", row.get(3)),
                ("truncate", row.get(4)),
            ],
            tables,
        }))
    }

    /// What makes this publication unsafe to decide from, in words (empty: safe).
    ///
    /// A missed delete of a `permissions` row would keep a revoked variable in
    /// a set; a missing model table would freeze the model; `FOR ALL TABLES`
    /// publishes the policy loader's key-less tables. `run` refuses all of
    /// these before it touches the slot.
    pub fn decision_problems(&self, name: &str) -> Vec<String> {
        let mut problems = Vec::new();
        if self.all_tables {
            problems.push(format!(
                "publication {name} is FOR ALL TABLES (it publishes the policy loader's \
                 key-less tables): drop it and run pgsieve setup"
            ));
        }
        let skipped: Vec<&str> = self
            .operations
            .iter()
            .filter(|(_, on)| !on)
            .map(|(op, _)| *op)
            .collect();
        if !skipped.is_empty() {
            problems.push(format!(
                "publication {name} does not publish {}",
                skipped.join(", ")
            ));
        }
        let missing: Vec<String> = DECISION_TABLES
            .iter()
            .map(|(t, _)| format!("{SCHEMA}.{t}"))
            .filter(|t| !self.tables.contains(t))
            .collect();
        if !missing.is_empty() && !self.all_tables {
            problems.push(format!(
                "publication {name} lacks {} (run pgsieve setup)",
                missing.join(", ")
            ));
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_needs_the_schema() {
        assert_eq!(classify("public", "secrets"), ConjurTable::Secrets);
        assert_eq!(classify("public", "resources"), ConjurTable::Resources);
        assert_eq!(classify("policy_loader_x", "resources"), ConjurTable::Other);
        assert_eq!(classify("public", "Secrets"), ConjurTable::Other);
        assert!(is_secrets("public", "secrets"));
        assert!(!is_secrets("other", "secrets"));
    }

    fn facts(all: bool, delete: bool, tables: &[&str]) -> PublicationFacts {
        PublicationFacts {
            all_tables: all,
            operations: vec![
                ("insert", true),
                ("update", true),
                ("delete", delete),
                ("truncate", true),
            ],
            tables: tables.iter().map(|t| format!("public.{t}")).collect(),
        }
    }

    #[test]
    fn decision_problems_name_each_hole() {
        let full = ["secrets", "role_memberships", "permissions", "resources"];
        assert!(facts(false, true, &full).decision_problems("p").is_empty());
        assert_eq!(
            facts(false, false, &full).decision_problems("p"),
            vec!["publication p does not publish delete".to_owned()]
        );
        let lacks = facts(false, true, &["secrets", "role_memberships", "resources"]);
        assert_eq!(
            lacks.decision_problems("p"),
            vec!["publication p lacks public.permissions (run pgsieve setup)".to_owned()]
        );
        assert_eq!(facts(true, true, &full).decision_problems("p").len(), 1);
    }
}

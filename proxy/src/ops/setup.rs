/*!
What `pgsieve setup` does to a leader, as SQL: the publication with Conjur's explicit
table list and `REPLICA IDENTITY FULL` on `policy_log`. Shared by the `setup` command
and the test harness (`harness::conjur::prepare_leader`), so tests run against exactly
the publication an operator gets.
*/

use crate::conjur::CONJUR_TABLES;

/// Idempotent SQL that prepares a leader database for pgsieve: `policy_log` gets
/// `REPLICA IDENTITY FULL` (without a key, a published table's DELETEs fail on the
/// leader, and Conjur trims policy versions with cascading deletes), and `publication`
/// is created for [`CONJUR_TABLES`] in schema `public` if missing, or has missing tables
/// added if it exists. Running it twice changes nothing.
pub fn setup_statements(publication: &str) -> Vec<String> {
    let tables = CONJUR_TABLES
        .iter()
        .map(|t| quote_literal(t))
        .collect::<Vec<_>>()
        .join(", ");
    let publication = quote_literal(publication);
    vec![
        "ALTER TABLE public.policy_log REPLICA IDENTITY FULL".to_string(),
        format!(
            "DO $pgsieve$
DECLARE
  pub text := {publication};
  wanted text[] := ARRAY[{tables}];
  missing text;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = pub) THEN
    EXECUTE format('CREATE PUBLICATION %I FOR TABLE %s', pub,
      (SELECT string_agg(format('public.%I', t), ', ') FROM unnest(wanted) AS t));
  ELSE
    SELECT string_agg(format('public.%I', t), ', ') INTO missing
    FROM unnest(wanted) AS t
    WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_publication_tables pt
                      WHERE pt.pubname = pub AND pt.schemaname = 'public' AND pt.tablename = t);
    IF missing IS NOT NULL THEN
      EXECUTE format('ALTER PUBLICATION %I ADD TABLE %s', pub, missing);
    END IF;
  END IF;
END
$pgsieve$"
        ),
    ]
}

/// `s` as an SQL string literal (`'` doubled; `E''` never needed with
/// standard_conforming_strings, the default since PostgreSQL 9.1).
fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publication_name_is_quoted_as_a_literal() {
        let stmts = setup_statements("it's");
        assert!(stmts[1].contains("pub text := 'it''s';"));
    }

    #[test]
    fn every_table_is_listed_once() {
        let stmts = setup_statements("p");
        for t in CONJUR_TABLES {
            assert_eq!(stmts[1].matches(&format!("'{t}'")).count(), 1, "{t}");
        }
        assert!(!stmts[1].contains("schema_migrations"));
    }
}

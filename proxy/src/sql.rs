//! SQL text that every part of pgsieve builds the same way: quoted
//! identifiers and schema-qualified names (the one home for quoting).

/// Quotes an SQL identifier (always, so case and keywords are safe).
pub fn quote_ident(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    out.push('"');
    for c in name.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// `"schema"."table"`.
pub fn qualified_name(schema: &str, table: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(table))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_always_and_doubles_quotes() {
        assert_eq!(quote_ident("secrets"), "\"secrets\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(
            qualified_name("public", "Secrets"),
            "\"public\".\"Secrets\""
        );
    }
}

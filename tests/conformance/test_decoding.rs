//! `test_decoding`: reading the oracle slot and parsing its lines.

use super::*;

/// Reads a `test_decoding` slot (peek: it stays readable) and parses every row;
/// each parsed line must render back to exactly the printed line.
pub(super) async fn test_decoding_events(client: &Client, slot: &str) -> Vec<Event> {
    let rows = client
        .query(
            "SELECT lsn::text, data FROM pg_logical_slot_peek_changes($1, NULL, NULL,
               'include-xids', '1', 'include-timestamp', '1', 'skip-empty-xacts', '1')",
            &[&slot],
        )
        .await
        .unwrap();
    assert!(!rows.is_empty(), "{slot}: test_decoding printed nothing");
    rows.iter()
        .map(|row| {
            let lsn: Lsn = row.get::<_, &str>(0).parse().unwrap();
            let line: &str = row.get(1);
            let event = parse_test_decoding(lsn, line)
                .unwrap_or_else(|e| panic!("{slot}: cannot parse {line:?}: {e}"));
            assert_eq!(event.to_string(), line, "{slot}: parser lost something");
            event
        })
        .collect()
}

/// Parses one `test_decoding` line; `lsn` is its row's LSN.
pub(super) fn parse_test_decoding(lsn: Lsn, line: &str) -> Result<Event, String> {
    let xid = |s: &str| s.parse::<u32>().map_err(|e| format!("xid {s:?}: {e}"));
    if let Some(rest) = line.strip_prefix("BEGIN ") {
        return Ok(Event::Begin { xid: xid(rest)? });
    }
    if let Some(rest) = line.strip_prefix("COMMIT PREPARED ") {
        let (gid, x, at) = gid_txid_at(rest)?;
        return Ok(Event::CommitPrepared {
            gid,
            xid: xid(x)?,
            end_lsn: lsn,
            at,
        });
    }
    if let Some(rest) = line.strip_prefix("COMMIT ") {
        let (x, at) = rest.split_once(" (at ").ok_or("no commit time")?;
        let at = at.strip_suffix(')').ok_or("unclosed commit time")?;
        return Ok(Event::Commit {
            xid: xid(x)?,
            end_lsn: lsn,
            at: at.to_string(),
        });
    }
    if let Some(rest) = line.strip_prefix("PREPARE TRANSACTION ") {
        let (gid, x, at) = gid_txid_at(rest)?;
        return Ok(Event::Prepare {
            gid,
            xid: xid(x)?,
            end_lsn: lsn,
            at,
        });
    }
    if let Some(rest) = line.strip_prefix("ROLLBACK PREPARED ") {
        let (gid, x, at) = gid_txid_at(rest)?;
        return Ok(Event::RollbackPrepared {
            gid,
            xid: xid(x)?,
            end_lsn: lsn,
            at,
        });
    }
    if let Some(rest) = line.strip_prefix("message: transactional: ") {
        let (flag, rest) = rest.split_once(" prefix: ").ok_or("no prefix")?;
        let (prefix, rest) = rest.split_once(", sz: ").ok_or("no size")?;
        let (size, content) = rest.split_once(" content:").ok_or("no content")?;
        let size: usize = size.parse().map_err(|e| format!("size {size:?}: {e}"))?;
        if size != content.len() {
            return Err(format!("content of {} bytes, sz {size}", content.len()));
        }
        return Ok(Event::Message {
            transactional: flag == "1",
            prefix: prefix.to_string(),
            content: content.to_string(),
            lsn,
        });
    }
    let rest = line.strip_prefix("table ").ok_or("unknown line")?;
    let (tables, rest) = rest.split_once(": ").ok_or("no operation")?;
    let table = tables.to_string();
    if let Some(flags) = rest.strip_prefix("TRUNCATE: ") {
        let flags: Vec<&str> = flags.split(' ').collect();
        return Ok(Event::Truncate {
            tables: tables.split(", ").map(str::to_string).collect(),
            restart_seqs: flags.contains(&"restart_seqs"),
            cascade: flags.contains(&"cascade"),
        });
    }
    if let Some(rest) = rest.strip_prefix("INSERT:") {
        let (new, _) = parse_fields(rest, false)?;
        return Ok(Event::Insert { table, new });
    }
    if let Some(rest) = rest.strip_prefix("UPDATE:") {
        if let Some(rest) = rest.strip_prefix(" old-key:") {
            let (old, rest) = parse_fields(rest, true)?;
            let rest = rest.strip_prefix(" new-tuple:").ok_or("no new-tuple")?;
            let (new, _) = parse_fields(rest, false)?;
            return Ok(Event::Update {
                table,
                old: Some(old),
                new,
            });
        }
        let (new, _) = parse_fields(rest, false)?;
        return Ok(Event::Update {
            table,
            old: None,
            new,
        });
    }
    if let Some(rest) = rest.strip_prefix("DELETE:") {
        let (old, _) = parse_fields(rest, false)?;
        return Ok(Event::Delete { table, old });
    }
    Err("unknown operation".into())
}

/// Splits `'gid', txid N (at time)` into the unquoted GID, N and the time.
pub(super) fn gid_txid_at(s: &str) -> Result<(String, &str, String), String> {
    let (gid, rest) = quoted(s, '\'')?;
    let rest = rest.strip_prefix(", txid ").ok_or("no txid")?;
    let (xid, at) = rest.split_once(" (at ").ok_or("no time")?;
    let at = at.strip_suffix(')').ok_or("unclosed time")?;
    Ok((gid, xid, at.to_string()))
}

/// Reads a `q`-quoted string (with `q` doubled inside) at the start of `s`; returns
/// the unquoted text and the rest.
pub(super) fn quoted(s: &str, q: char) -> Result<(String, &str), String> {
    let body = s.strip_prefix(q).ok_or("no opening quote")?;
    let mut text = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        if c != q {
            text.push(c);
        } else if body[i + 1..].starts_with(q) {
            text.push(q);
            chars.next();
        } else {
            return Ok((text, &body[i + 1..]));
        }
    }
    Err("no closing quote".into())
}

/// Parses ` name[type]:value` columns up to the end of `s` or, when `old_key`, up to
/// ` new-tuple:`; returns them and the unparsed rest.
pub(super) fn parse_fields(mut s: &str, old_key: bool) -> Result<(Vec<Field>, &str), String> {
    let mut fields = Vec::new();
    while !s.is_empty() {
        if old_key && s.starts_with(" new-tuple:") {
            break;
        }
        let rest = s.strip_prefix(' ').ok_or("no space before a column")?;
        let (name, rest) = if rest.starts_with('"') {
            quoted(rest, '"')?
        } else {
            let end = rest.find('[').ok_or("no column type")?;
            (rest[..end].to_string(), &rest[end..])
        };
        let rest = rest.strip_prefix('[').ok_or("no '[' after the name")?;
        let end = rest.find("]:").ok_or("no ']:' after the type")?;
        let type_name = rest[..end].to_string();
        let rest = &rest[end + 2..];
        let len = value_len(rest)?;
        fields.push(Field {
            name,
            type_name,
            value: rest[..len].to_string(),
        });
        s = &rest[len..];
    }
    Ok((fields, s))
}

/// Length of the printed value at the start of `s`: a quoted literal, a `B'…'` bit
/// string, or a bare word (number, `true`, `null`, `unchanged-toast-datum`).
pub(super) fn value_len(s: &str) -> Result<usize, String> {
    if s.starts_with('\'') {
        let (_, rest) = quoted(s, '\'')?;
        Ok(s.len() - rest.len())
    } else if let Some(bits) = s.strip_prefix("B'") {
        let end = bits.find('\'').ok_or("unclosed bit string")?;
        Ok(2 + end + 1)
    } else {
        Ok(s.find(' ').unwrap_or(s.len()))
    }
}

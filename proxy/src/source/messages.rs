//! Parsing the few backend message bodies the replication connection needs:
//! authentication requests, ErrorResponse/NoticeResponse fields, DataRow,
//! RowDescription (column count only), ReadyForQuery.
//!
//! Bodies arrive already framed ([`super::framing`]); every read here is
//! bounds-checked and a short body is a [`SourceError::Protocol`].

use bytes::Bytes;

use super::error::SourceError;

/// Backend message tags this module and its users care about.
pub(crate) mod tag {
    pub const AUTHENTICATION: u8 = b'R';
    pub const BACKEND_KEY_DATA: u8 = b'K';
    pub const COMMAND_COMPLETE: u8 = b'C';
    pub const COPY_BOTH_RESPONSE: u8 = b'W';
    pub const COPY_DATA: u8 = b'd';
    pub const COPY_DONE: u8 = b'c';
    pub const DATA_ROW: u8 = b'D';
    pub const EMPTY_QUERY_RESPONSE: u8 = b'I';
    pub const ERROR_RESPONSE: u8 = b'E';
    pub const NOTICE_RESPONSE: u8 = b'N';
    pub const NOTIFICATION_RESPONSE: u8 = b'A';
    pub const PARAMETER_STATUS: u8 = b'S';
    pub const READY_FOR_QUERY: u8 = b'Z';
    pub const ROW_DESCRIPTION: u8 = b'T';
}

/// A bounds-checked reader over one message body.
struct Cursor<'a> {
    body: &'a [u8],
    what: &'static str,
}

impl<'a> Cursor<'a> {
    fn new(body: &'a [u8], what: &'static str) -> Self {
        Cursor { body, what }
    }

    fn short(&self) -> SourceError {
        SourceError::Protocol(format!("truncated {} message", self.what))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], SourceError> {
        if self.body.len() < n {
            return Err(self.short());
        }
        let (head, tail) = self.body.split_at(n);
        self.body = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, SourceError> {
        Ok(self.take(1)?[0])
    }

    fn i16(&mut self) -> Result<i16, SourceError> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self) -> Result<i32, SourceError> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A NUL-terminated string, without the NUL.
    fn cstr(&mut self) -> Result<&'a [u8], SourceError> {
        let end = self
            .body
            .iter()
            .position(|b| *b == 0)
            .ok_or_else(|| self.short())?;
        let s = self.take(end)?;
        self.take(1)?;
        Ok(s)
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.body)
    }
}

/// An authentication request (`'R'`) from the server.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum AuthRequest {
    /// AuthenticationOk: login succeeded.
    Ok,
    /// AuthenticationCleartextPassword.
    Cleartext,
    /// AuthenticationMD5Password with its salt.
    Md5([u8; 4]),
    /// AuthenticationSASL with the offered mechanisms.
    Sasl(Vec<String>),
    /// AuthenticationSASLContinue with the server-first message.
    SaslContinue(Bytes),
    /// AuthenticationSASLFinal with the server-final message.
    SaslFinal(Bytes),
    /// Anything else (Kerberos, GSSAPI, SSPI): not supported.
    Unsupported(i32),
}

/// Parses the body of an `'R'` message.
pub(crate) fn parse_auth_request(body: &Bytes) -> Result<AuthRequest, SourceError> {
    let mut c = Cursor::new(body, "authentication request");
    let request = match c.i32()? {
        0 => AuthRequest::Ok,
        3 => AuthRequest::Cleartext,
        5 => {
            let salt = c.take(4)?;
            AuthRequest::Md5([salt[0], salt[1], salt[2], salt[3]])
        }
        10 => {
            let mut mechanisms = Vec::new();
            loop {
                let m = c.cstr()?;
                if m.is_empty() {
                    break;
                }
                mechanisms.push(String::from_utf8_lossy(m).into_owned());
            }
            AuthRequest::Sasl(mechanisms)
        }
        11 => AuthRequest::SaslContinue(body.slice(4..)),
        12 => AuthRequest::SaslFinal(body.slice(4..)),
        other => AuthRequest::Unsupported(other),
    };
    Ok(request)
}

/// The fields of an ErrorResponse or NoticeResponse.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct ErrorFields {
    /// Non-localized severity (`V`), else the localized one (`S`).
    pub severity: String,
    /// SQLSTATE (`C`).
    pub code: String,
    /// Primary message (`M`).
    pub message: String,
    /// Detail (`D`).
    pub detail: Option<String>,
    /// Hint (`H`).
    pub hint: Option<String>,
}

impl ErrorFields {
    /// Turns the fields into the public error type.
    pub(crate) fn into_error(self) -> SourceError {
        let detail = match (self.detail, self.hint) {
            (Some(d), Some(h)) => Some(format!("{d}; hint: {h}")),
            (Some(d), None) => Some(d),
            (None, Some(h)) => Some(format!("hint: {h}")),
            (None, None) => None,
        };
        SourceError::Server {
            severity: self.severity,
            code: self.code,
            message: self.message,
            detail,
        }
    }
}

/// Parses the body of an `'E'` or `'N'` message.
pub(crate) fn parse_error_fields(body: &[u8]) -> Result<ErrorFields, SourceError> {
    let mut c = Cursor::new(body, "error response");
    let mut fields = ErrorFields::default();
    let mut localized_severity = String::new();
    loop {
        let kind = c.u8()?;
        if kind == 0 {
            break;
        }
        let value = String::from_utf8_lossy(c.cstr()?).into_owned();
        match kind {
            b'V' => fields.severity = value,
            b'S' => localized_severity = value,
            b'C' => fields.code = value,
            b'M' => fields.message = value,
            b'D' => fields.detail = Some(value),
            b'H' => fields.hint = Some(value),
            _ => {}
        }
    }
    if fields.severity.is_empty() {
        fields.severity = localized_severity;
    }
    Ok(fields)
}

/// Parses an ErrorResponse body straight into [`SourceError::Server`].
pub(crate) fn parse_error(body: &[u8]) -> SourceError {
    match parse_error_fields(body) {
        Ok(fields) => fields.into_error(),
        Err(e) => e,
    }
}

/// Parses a DataRow body into text columns (`None` = SQL NULL).
pub(crate) fn parse_data_row(body: &[u8]) -> Result<Vec<Option<String>>, SourceError> {
    let mut c = Cursor::new(body, "data row");
    let count = usize::try_from(c.i16()?)
        .map_err(|_| SourceError::Protocol("data row with negative column count".into()))?;
    let mut row = Vec::with_capacity(count);
    for _ in 0..count {
        let len = c.i32()?;
        if len < 0 {
            row.push(None);
            continue;
        }
        let bytes = c.take(usize::try_from(len).unwrap_or(usize::MAX))?;
        let text = std::str::from_utf8(bytes)
            .map_err(|_| SourceError::Protocol("data row column is not UTF-8".into()))?;
        row.push(Some(text.to_owned()));
    }
    if !c.rest().is_empty() {
        return Err(SourceError::Protocol(
            "trailing bytes after data row".into(),
        ));
    }
    Ok(row)
}

/// Name and value of a ParameterStatus message.
pub(crate) fn parse_parameter_status(body: &[u8]) -> Result<(String, String), SourceError> {
    let mut c = Cursor::new(body, "parameter status");
    let name = String::from_utf8_lossy(c.cstr()?).into_owned();
    let value = String::from_utf8_lossy(c.cstr()?).into_owned();
    Ok((name, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_fields_prefer_non_localized_severity() {
        let body =
            b"SFEHLER\0VERROR\0C55000\0Mlogical decoding requires wal_level >= logical\0Dd\0Hh\0\0";
        let f = parse_error_fields(body).unwrap();
        assert_eq!(f.severity, "ERROR");
        assert_eq!(f.code, "55000");
        assert_eq!(f.detail.as_deref(), Some("d"));
        match f.into_error() {
            SourceError::Server { detail, .. } => assert_eq!(detail.as_deref(), Some("d; hint: h")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn truncated_error_is_protocol_error() {
        assert!(matches!(
            parse_error_fields(b"SERROR"),
            Err(SourceError::Protocol(_))
        ));
    }

    #[test]
    fn data_row_with_null_and_text() {
        let mut body = vec![0, 2];
        body.extend_from_slice(&(-1i32).to_be_bytes());
        body.extend_from_slice(&3i32.to_be_bytes());
        body.extend_from_slice(b"abc");
        assert_eq!(
            parse_data_row(&body).unwrap(),
            vec![None, Some("abc".to_string())]
        );
        body.truncate(body.len() - 1);
        assert!(parse_data_row(&body).is_err());
    }

    #[test]
    fn sasl_mechanisms_are_listed() {
        let mut body = 10i32.to_be_bytes().to_vec();
        body.extend_from_slice(b"SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0");
        assert_eq!(
            parse_auth_request(&Bytes::from(body)).unwrap(),
            AuthRequest::Sasl(vec!["SCRAM-SHA-256-PLUS".into(), "SCRAM-SHA-256".into()])
        );
    }
}

//! Logging in: answers the server's authentication requests (cleartext,
//! MD5, SCRAM-SHA-256 and, over TLS, SCRAM-SHA-256-PLUS) until
//! AuthenticationOk. A cleartext request is refused unless the server's
//! certificate was verified; `channel_binding=require` fails unless the
//! exchange was bound to the TLS session.
//!
//! The hashes and the SCRAM state machine come from postgres-protocol; this
//! file only drives the exchange and turns failures into
//! [`SourceError::Auth`] with the server's own words.

use bytes::BytesMut;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{self, ChannelBinding, ScramSha256};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::error::SourceError;
use super::framing::FrameReader;
use super::messages::{self, AuthRequest, tag};
use crate::conn::{ChannelBinding as Binding, TlsInfo};

/// Who logs in, with what, over which transport.
pub(crate) struct Credentials<'a> {
    /// Role name.
    pub user: &'a str,
    /// Password, when one was configured (for this server only).
    pub password: Option<&'a [u8]>,
    /// The TLS session, when there is one.
    pub tls: Option<&'a TlsInfo>,
    /// `channel_binding` of the connection string.
    pub channel_binding: Binding,
}

/// Runs the authentication exchange that follows the startup message.
pub(crate) async fn authenticate<R, W>(
    reader: &mut FrameReader<R>,
    writer: &mut W,
    credentials: &Credentials<'_>,
) -> Result<(), SourceError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let addr = reader.addr().to_string();
    let fail = |code: Option<String>, message: String| SourceError::Auth {
        addr: addr.clone(),
        user: credentials.user.to_string(),
        code,
        message,
    };
    let password = || {
        credentials.password.ok_or_else(|| {
            fail(
                None,
                "the server asks for a password but none is configured".into(),
            )
        })
    };
    let mut scram: Option<ScramSha256> = None;
    let mut bound = false;
    let end_point = credentials
        .tls
        .and_then(|t| t.end_point.clone())
        .filter(|_| credentials.channel_binding != Binding::Disable);
    let mut out = BytesMut::new();
    loop {
        let frame = reader.next_frame().await?;
        out.clear();
        match frame.tag {
            tag::AUTHENTICATION => match messages::parse_auth_request(&frame.body)? {
                AuthRequest::Ok => {
                    if credentials.channel_binding == Binding::Require && !bound {
                        return Err(fail(
                            None,
                            "channel_binding=require, but the server authenticated without SCRAM-SHA-256-PLUS".into(),
                        ));
                    }
                    return Ok(());
                }
                AuthRequest::Cleartext => {
                    if !credentials.tls.is_some_and(|t| t.verified) {
                        return Err(fail(
                            None,
                            "the server asks for the password in cleartext, which pgsieve sends only over TLS with a verified certificate (sslmode=verify-ca or verify-full); use scram-sha-256 in pg_hba.conf".into(),
                        ));
                    }
                    frontend::password_message(password()?, &mut out).map_err(encode_error)?;
                }
                AuthRequest::Md5(salt) => {
                    let hash = md5_hash(credentials.user.as_bytes(), password()?, salt);
                    frontend::password_message(hash.as_bytes(), &mut out).map_err(encode_error)?;
                }
                AuthRequest::Sasl(mechanisms) => {
                    let usable = mechanisms.iter().any(|m| {
                        m == sasl::SCRAM_SHA_256
                            || (m == sasl::SCRAM_SHA_256_PLUS && end_point.is_some())
                    });
                    if !usable {
                        return Err(fail(
                            None,
                            format!("no supported SASL mechanism offered: {mechanisms:?}"),
                        ));
                    }
                    let plus = mechanisms.iter().any(|m| m == sasl::SCRAM_SHA_256_PLUS);
                    // PLUS when both sides can; 'y' (we could, the server
                    // did not offer it: downgrade detection); 'n' otherwise.
                    let (binding, mechanism) = match (&end_point, plus) {
                        (Some(hash), true) => (
                            ChannelBinding::tls_server_end_point(hash.clone()),
                            sasl::SCRAM_SHA_256_PLUS,
                        ),
                        (Some(_), false) => (ChannelBinding::unrequested(), sasl::SCRAM_SHA_256),
                        (None, _) => (ChannelBinding::unsupported(), sasl::SCRAM_SHA_256),
                    };
                    if mechanism != sasl::SCRAM_SHA_256_PLUS
                        && credentials.channel_binding == Binding::Require
                    {
                        return Err(fail(
                            None,
                            "channel_binding=require, but SCRAM-SHA-256-PLUS is not possible on this connection (no TLS, or the server does not offer it)".into(),
                        ));
                    }
                    bound = mechanism == sasl::SCRAM_SHA_256_PLUS;
                    let state = ScramSha256::new(password()?, binding);
                    frontend::sasl_initial_response(mechanism, state.message(), &mut out)
                        .map_err(encode_error)?;
                    scram = Some(state);
                }
                AuthRequest::SaslContinue(data) => {
                    let state = scram.as_mut().ok_or_else(|| {
                        SourceError::Protocol("SASL continue before SASL start".into())
                    })?;
                    state
                        .update(&data)
                        .map_err(|e| fail(None, format!("SCRAM exchange failed: {e}")))?;
                    frontend::sasl_response(state.message(), &mut out).map_err(encode_error)?;
                }
                AuthRequest::SaslFinal(data) => {
                    let state = scram.as_mut().ok_or_else(|| {
                        SourceError::Protocol("SASL final before SASL start".into())
                    })?;
                    state.finish(&data).map_err(|e| {
                        fail(None, format!("server SCRAM signature did not verify: {e}"))
                    })?;
                }
                AuthRequest::Unsupported(code) => {
                    return Err(fail(
                        None,
                        format!(
                            "the server asks for authentication method {code}, only password, md5 and scram-sha-256 are supported"
                        ),
                    ));
                }
            },
            tag::ERROR_RESPONSE => {
                let fields = messages::parse_error_fields(&frame.body)?;
                if fields.code.starts_with("28") {
                    return Err(fail(Some(fields.code), fields.message));
                }
                return Err(fields.into_error());
            }
            tag::NOTICE_RESPONSE => {
                let fields = messages::parse_error_fields(&frame.body)?;
                tracing::debug!(code = %fields.code, message = %fields.message, "Leader notice during authentication.");
            }
            other => {
                return Err(SourceError::Protocol(format!(
                    "unexpected message {:?} during authentication",
                    char::from(other)
                )));
            }
        }
        if !out.is_empty() {
            writer
                .write_all(&out)
                .await
                .map_err(|source| SourceError::Io {
                    addr: addr.clone(),
                    source,
                })?;
            writer.flush().await.map_err(|source| SourceError::Io {
                addr: addr.clone(),
                source,
            })?;
        }
    }
}

/// postgres-protocol's encoders fail only on strings with NUL or oversized
/// bodies: a configuration problem, not a network one.
pub(crate) fn encode_error(e: std::io::Error) -> SourceError {
    SourceError::Config(format!("cannot encode message: {e}"))
}

//! Logging in: answers the server's authentication requests (cleartext,
//! MD5, SCRAM-SHA-256) until AuthenticationOk.
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

/// Who logs in, with what, over which transport.
pub(crate) struct Credentials<'a> {
    /// Role name.
    pub user: &'a str,
    /// Password, when one was configured.
    pub password: Option<&'a [u8]>,
    /// Whether the transport is TLS (affects the SCRAM channel-binding flag).
    pub is_tls: bool,
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
    let mut out = BytesMut::new();
    loop {
        let frame = reader.next_frame().await?;
        out.clear();
        match frame.tag {
            tag::AUTHENTICATION => match messages::parse_auth_request(&frame.body)? {
                AuthRequest::Ok => return Ok(()),
                AuthRequest::Cleartext => {
                    frontend::password_message(password()?, &mut out).map_err(encode_error)?;
                }
                AuthRequest::Md5(salt) => {
                    let hash = md5_hash(credentials.user.as_bytes(), password()?, salt);
                    frontend::password_message(hash.as_bytes(), &mut out).map_err(encode_error)?;
                }
                AuthRequest::Sasl(mechanisms) => {
                    if !mechanisms.iter().any(|m| m == sasl::SCRAM_SHA_256) {
                        return Err(fail(
                            None,
                            format!("no supported SASL mechanism offered: {mechanisms:?}"),
                        ));
                    }
                    // 'n': we do not do channel binding; 'y': we could, but
                    // the server did not offer it (downgrade detection).
                    let binding = if credentials.is_tls
                        && !mechanisms.iter().any(|m| m == sasl::SCRAM_SHA_256_PLUS)
                    {
                        ChannelBinding::unrequested()
                    } else {
                        ChannelBinding::unsupported()
                    };
                    let state = ScramSha256::new(password()?, binding);
                    frontend::sasl_initial_response(sasl::SCRAM_SHA_256, state.message(), &mut out)
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

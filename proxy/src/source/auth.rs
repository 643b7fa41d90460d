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
    let mut exchange = Exchange::new(reader.addr().to_string(), credentials);
    let mut out = BytesMut::new();
    loop {
        let frame = reader.next_frame().await?;
        out.clear();
        match frame.tag {
            tag::AUTHENTICATION => {
                let request = messages::parse_auth_request(&frame.body)?;
                if exchange.answer(request, &mut out)? == Answered::LoggedIn {
                    return Ok(());
                }
            }
            tag::ERROR_RESPONSE => {
                let fields = messages::parse_error_fields(&frame.body)?;
                if fields.code.starts_with("28") {
                    return Err(exchange.fail(Some(fields.code), fields.message));
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
            let io = |source| SourceError::Io {
                addr: exchange.addr.clone(),
                source,
            };
            writer.write_all(&out).await.map_err(io)?;
            writer.flush().await.map_err(io)?;
        }
    }
}

/// Whether the server let us in or waits for the answer in `out`.
#[derive(Debug, PartialEq, Eq)]
enum Answered {
    /// AuthenticationOk.
    LoggedIn,
    /// An answer (possibly empty) to send, then the next request.
    Continue,
}

/// The state of one authentication exchange, so that each request is answered
/// by a step of its own.
struct Exchange<'c, 'a> {
    /// The server's address, for errors.
    addr: String,
    credentials: &'c Credentials<'a>,
    /// The TLS end-point hash to bind to, unless binding is disabled or impossible.
    end_point: Option<Vec<u8>>,
    /// The SCRAM state once the SASL exchange started.
    scram: Option<ScramSha256>,
    /// Whether the exchange is bound to the TLS session (SCRAM-SHA-256-PLUS).
    bound: bool,
}

impl<'c, 'a> Exchange<'c, 'a> {
    fn new(addr: String, credentials: &'c Credentials<'a>) -> Self {
        let end_point = credentials
            .tls
            .and_then(|t| t.end_point.clone())
            .filter(|_| credentials.channel_binding != Binding::Disable);
        Exchange {
            addr,
            credentials,
            end_point,
            scram: None,
            bound: false,
        }
    }

    /// An authentication failure with the server's code, if it gave one.
    fn fail(&self, code: Option<String>, message: String) -> SourceError {
        SourceError::Auth {
            addr: self.addr.clone(),
            user: self.credentials.user.to_string(),
            code,
            message,
        }
    }

    /// The password, or the error saying none is configured.
    fn password(&self) -> Result<&'a [u8], SourceError> {
        self.credentials.password.ok_or_else(|| {
            self.fail(
                None,
                "the server asks for a password but none is configured".into(),
            )
        })
    }

    /// Answers one authentication request into `out`.
    fn answer(
        &mut self,
        request: AuthRequest,
        out: &mut BytesMut,
    ) -> Result<Answered, SourceError> {
        match request {
            AuthRequest::Ok => {
                if self.credentials.channel_binding == Binding::Require && !self.bound {
                    return Err(self.fail(
                        None,
                        "channel_binding=require, but the server authenticated without SCRAM-SHA-256-PLUS".into(),
                    ));
                }
                return Ok(Answered::LoggedIn);
            }
            AuthRequest::Cleartext => {
                if !self.credentials.tls.is_some_and(|t| t.verified) {
                    return Err(self.fail(
                        None,
                        "the server asks for the password in cleartext, which pgsieve sends only over TLS with a verified certificate (sslmode=verify-ca or verify-full); use scram-sha-256 in pg_hba.conf".into(),
                    ));
                }
                frontend::password_message(self.password()?, out).map_err(encode_error)?;
            }
            AuthRequest::Md5(salt) => {
                let hash = md5_hash(self.credentials.user.as_bytes(), self.password()?, salt);
                frontend::password_message(hash.as_bytes(), out).map_err(encode_error)?;
            }
            AuthRequest::Sasl(mechanisms) => self.sasl_start(&mechanisms, out)?,
            AuthRequest::SaslContinue(data) => {
                let state = self.scram.as_mut().ok_or_else(|| {
                    SourceError::Protocol("SASL continue before SASL start".into())
                })?;
                if let Err(e) = state.update(&data) {
                    return Err(self.fail(None, format!("SCRAM exchange failed: {e}")));
                }
                frontend::sasl_response(state.message(), out).map_err(encode_error)?;
            }
            AuthRequest::SaslFinal(data) => {
                let state = self
                    .scram
                    .as_mut()
                    .ok_or_else(|| SourceError::Protocol("SASL final before SASL start".into()))?;
                if let Err(e) = state.finish(&data) {
                    return Err(
                        self.fail(None, format!("server SCRAM signature did not verify: {e}"))
                    );
                }
            }
            AuthRequest::Unsupported(code) => {
                return Err(self.fail(
                    None,
                    format!(
                        "the server asks for authentication method {code}, only password, md5 and scram-sha-256 are supported"
                    ),
                ));
            }
        }
        Ok(Answered::Continue)
    }

    /// AuthenticationSASL: picks the mechanism and channel binding, then sends the
    /// client-first message.
    fn sasl_start(&mut self, mechanisms: &[String], out: &mut BytesMut) -> Result<(), SourceError> {
        let usable = mechanisms.iter().any(|m| {
            m == sasl::SCRAM_SHA_256 || (m == sasl::SCRAM_SHA_256_PLUS && self.end_point.is_some())
        });
        if !usable {
            return Err(self.fail(
                None,
                format!("no supported SASL mechanism offered: {mechanisms:?}"),
            ));
        }
        let plus = mechanisms.iter().any(|m| m == sasl::SCRAM_SHA_256_PLUS);
        // PLUS when both sides can; 'y' (we could, the server
        // did not offer it: downgrade detection); 'n' otherwise.
        let (binding, mechanism) = match (&self.end_point, plus) {
            (Some(hash), true) => (
                ChannelBinding::tls_server_end_point(hash.clone()),
                sasl::SCRAM_SHA_256_PLUS,
            ),
            (Some(_), false) => (ChannelBinding::unrequested(), sasl::SCRAM_SHA_256),
            (None, _) => (ChannelBinding::unsupported(), sasl::SCRAM_SHA_256),
        };
        if mechanism != sasl::SCRAM_SHA_256_PLUS
            && self.credentials.channel_binding == Binding::Require
        {
            return Err(self.fail(
                None,
                "channel_binding=require, but SCRAM-SHA-256-PLUS is not possible on this connection (no TLS, or the server does not offer it)".into(),
            ));
        }
        self.bound = mechanism == sasl::SCRAM_SHA_256_PLUS;
        let state = ScramSha256::new(self.password()?, binding);
        frontend::sasl_initial_response(mechanism, state.message(), out).map_err(encode_error)?;
        self.scram = Some(state);
        Ok(())
    }
}

/// postgres-protocol's encoders fail only on strings with NUL or oversized
/// bodies: a configuration problem, not a network one.
pub(crate) fn encode_error(e: std::io::Error) -> SourceError {
    SourceError::Config(format!("cannot encode message: {e}"))
}

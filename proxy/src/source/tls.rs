//! TLS for the replication connection: the `SSLRequest` exchange and a
//! rustls client (ring provider) configured per [`TlsMode`].
//!
//! `Prefer` and `Require` encrypt without checking the certificate (libpq's
//! `sslmode=prefer/require`); `VerifyFull` checks the chain against the
//! Mozilla roots (webpki-roots) or a given CA bundle and checks the host name.

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::BytesMut;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::error::SourceError;

/// How the replication connection uses TLS.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TlsMode {
    /// Never ask for TLS (trusted networks, Unix sockets, tests).
    Disable,
    /// Use TLS when the server offers it, without certificate checks.
    #[default]
    Prefer,
    /// Insist on TLS, without certificate checks (protects against passive
    /// eavesdropping only).
    Require,
    /// Insist on TLS and verify chain and host name, against `ca_file` (PEM
    /// bundle) when given, else the Mozilla roots.
    VerifyFull {
        /// PEM file with the CA certificate(s) to trust instead of webpki-roots.
        ca_file: Option<PathBuf>,
    },
}

impl TlsMode {
    /// The mode a libpq-style `sslmode` from a parsed connection string means.
    pub fn from_ssl_mode(mode: tokio_postgres::config::SslMode) -> TlsMode {
        use tokio_postgres::config::SslMode;
        match mode {
            SslMode::Disable => TlsMode::Disable,
            SslMode::Require => TlsMode::Require,
            _ => TlsMode::Prefer,
        }
    }
}

/// Anything the connection can run over: TCP, TLS over TCP, Unix socket.
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// A boxed transport, so one code path serves every kind of socket.
pub(crate) type BoxedIo = Box<dyn Io>;

/// Whether TLS ended up in use.
pub(crate) struct Negotiated {
    pub io: BoxedIo,
    pub is_tls: bool,
}

/// Runs the SSLRequest exchange on a fresh TCP connection and, when the
/// server agrees, the TLS handshake for `host`.
pub(crate) async fn negotiate(
    mut tcp: TcpStream,
    mode: &TlsMode,
    host: &str,
    addr: &str,
) -> Result<Negotiated, SourceError> {
    if *mode == TlsMode::Disable {
        return Ok(Negotiated {
            io: Box::new(tcp),
            is_tls: false,
        });
    }
    let io_err = |source| SourceError::Io {
        addr: addr.to_string(),
        source,
    };
    let mut request = BytesMut::new();
    postgres_protocol::message::frontend::ssl_request(&mut request);
    tcp.write_all(&request).await.map_err(io_err)?;
    // Exactly one byte: anything the server sent after it before the
    // handshake must not be trusted (CVE-2021-23222).
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await.map_err(io_err)?;
    match answer[0] {
        b'S' => {}
        b'N' if *mode == TlsMode::Prefer => {
            return Ok(Negotiated {
                io: Box::new(tcp),
                is_tls: false,
            });
        }
        b'N' => {
            return Err(SourceError::Tls {
                addr: addr.to_string(),
                reason: "the server does not accept TLS connections (ssl = off)".into(),
            });
        }
        // An old server answers an unknown request with an ErrorResponse.
        b'E' => {
            return Err(SourceError::Tls {
                addr: addr.to_string(),
                reason: "the server rejected the SSLRequest".into(),
            });
        }
        other => {
            return Err(SourceError::Protocol(format!(
                "unexpected answer {other:#04x} to SSLRequest from {addr}"
            )));
        }
    }
    let config = client_config(mode).map_err(|reason| SourceError::Tls {
        addr: addr.to_string(),
        reason,
    })?;
    let server_name = ServerName::try_from(host.to_string()).map_err(|e| SourceError::Tls {
        addr: addr.to_string(),
        reason: format!("{host:?} is not a valid TLS server name: {e}"),
    })?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(server_name, tcp)
        .await
        .map_err(|e| SourceError::Tls {
            addr: addr.to_string(),
            reason: e.to_string(),
        })?;
    Ok(Negotiated {
        io: Box::new(tls),
        is_tls: true,
    })
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls client configuration for `mode` (never called for `Disable`).
fn client_config(mode: &TlsMode) -> Result<ClientConfig, String> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let config = match mode {
        TlsMode::VerifyFull { ca_file } => {
            let roots = match ca_file {
                Some(path) => load_ca_file(path)?,
                None => RootCertStore {
                    roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
                },
            };
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        _ => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoCertificateCheck(provider)))
            .with_no_client_auth(),
    };
    Ok(config)
}

/// Reads a PEM bundle into a root store; an empty bundle is an error.
fn load_ca_file(path: &Path) -> Result<RootCertStore, String> {
    let file = std::fs::File::open(path)
        .map_err(|e| format!("cannot read CA file {}: {e}", path.display()))?;
    let mut roots = RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut BufReader::new(file)) {
        let cert = cert.map_err(|e| format!("bad PEM in CA file {}: {e}", path.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("bad certificate in CA file {}: {e}", path.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("CA file {} holds no certificate", path.display()));
    }
    Ok(roots)
}

/// `sslmode=require` semantics: any certificate is accepted, but the
/// handshake signatures are still verified so the session key is the
/// server's.
#[derive(Debug)]
struct NoCertificateCheck(Arc<CryptoProvider>);

impl ServerCertVerifier for NoCertificateCheck {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

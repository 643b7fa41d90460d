//! TLS for every connection: the rustls client configuration an
//! [`SslParams`] asks for (built once, when the configuration is resolved, so
//! a bad CA or key file fails before anything connects), the `SSLRequest`
//! exchange, and the `tls-server-end-point` channel binding.

use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use bytes::BytesMut;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::ConnError;
use super::files::check_private_file;
use super::params::{RootCert, SslMode, SslParams};

/// TLS ready to use: the rustls configuration and whether it verifies the
/// server (only then may a cleartext password be sent).
#[derive(Clone)]
pub struct TlsSetup {
    /// The mode after libpq's rule (`require` with a root certificate is `verify-ca`).
    pub mode: SslMode,
    /// rustls client configuration (`None` for `disable`).
    pub config: Option<Arc<ClientConfig>>,
}

impl std::fmt::Debug for TlsSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSetup")
            .field("mode", &self.mode)
            .finish()
    }
}

impl TlsSetup {
    /// Reads the certificate files and builds the rustls configuration.
    pub fn build(params: &SslParams) -> Result<TlsSetup, String> {
        let mut mode = params.mode;
        if mode == SslMode::Disable {
            return Ok(TlsSetup { mode, config: None });
        }
        // libpq: `require` with a root certificate file checks the chain.
        if mode == SslMode::Require && params.rootcert.is_some() {
            mode = SslMode::VerifyCa;
        }
        let provider = provider();
        let versions: Vec<&'static rustls::SupportedProtocolVersion> = {
            let rank = |v: Option<&str>, default: u8| match v {
                Some("TLSv1.3") => 3,
                Some(_) => 2,
                None => default,
            };
            let min = rank(params.min_protocol.as_deref(), 2);
            let max = rank(params.max_protocol.as_deref(), 3);
            [(2, &rustls::version::TLS12), (3, &rustls::version::TLS13)]
                .into_iter()
                .filter(|(n, _)| (min..=max).contains(n))
                .map(|(_, v)| v)
                .collect()
        };
        if versions.is_empty() {
            return Err("ssl_min_protocol_version is above ssl_max_protocol_version".into());
        }
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&versions)
            .map_err(|e| e.to_string())?;
        let verifier: Arc<dyn ServerCertVerifier> = match mode {
            SslMode::VerifyCa | SslMode::VerifyFull => {
                let roots = match &params.rootcert {
                    Some(RootCert::File(path)) => load_roots(path)?,
                    Some(RootCert::System) => RootCertStore {
                        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
                    },
                    None => {
                        return Err(format!(
                            "sslmode={} needs a root certificate: set sslrootcert to the CA's PEM file (or sslrootcert=system for public CAs), or ~/.postgresql/root.crt",
                            mode.as_str()
                        ));
                    }
                };
                let mut builder =
                    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone());
                if let Some(crl) = &params.crl {
                    builder = builder.with_crls(load_crls(crl)?);
                }
                let webpki = builder.build().map_err(|e| e.to_string())?;
                if mode == SslMode::VerifyFull {
                    webpki
                } else {
                    Arc::new(ChainOnly(webpki))
                }
            }
            _ => Arc::new(NoCertificateCheck(provider.clone())),
        };
        let builder = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match (&params.cert, &params.key) {
            (Some(cert), Some(key)) => {
                let certs = load_certs(cert, "client certificate")?;
                check_private_file(key, "private key (sslkey)")?;
                let key_der = rustls_pemfile::private_key(&mut BufReader::new(
                    std::fs::File::open(key)
                        .map_err(|e| format!("cannot read sslkey {}: {e}", key.display()))?,
                ))
                .map_err(|e| format!("bad PEM in sslkey {}: {e}", key.display()))?
                .ok_or_else(|| format!("sslkey {} holds no private key", key.display()))?;
                builder
                    .with_client_auth_cert(certs, key_der)
                    .map_err(|e| format!("client certificate {}: {e}", cert.display()))?
            }
            (Some(cert), None) => {
                return Err(format!(
                    "sslcert {} is set but sslkey is not",
                    cert.display()
                ));
            }
            (None, Some(key)) => {
                return Err(format!(
                    "sslkey {} is set but sslcert is not",
                    key.display()
                ));
            }
            (None, None) => builder.with_no_client_auth(),
        };
        config.enable_sni = params.sni;
        Ok(TlsSetup {
            mode,
            config: Some(Arc::new(config)),
        })
    }

    /// Whether the server's certificate is checked (`verify-ca`, `verify-full`).
    pub fn verifies(&self) -> bool {
        matches!(self.mode, SslMode::VerifyCa | SslMode::VerifyFull)
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn load_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let file = std::fs::File::open(path)
        .map_err(|e| format!("cannot read {what} {}: {e}", path.display()))?;
    let certs = rustls_pemfile::certs(&mut BufReader::new(file))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bad PEM in {what} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{what} {} holds no certificate", path.display()));
    }
    Ok(certs)
}

/// Reads a PEM bundle into a root store; an empty bundle is an error.
fn load_roots(path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path, "root certificate file (sslrootcert)")? {
        roots.add(cert).map_err(|e| {
            format!(
                "bad certificate in root certificate file {}: {e}",
                path.display()
            )
        })?;
    }
    Ok(roots)
}

fn load_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, String> {
    let bytes =
        std::fs::read(path).map_err(|e| format!("cannot read sslcrl {}: {e}", path.display()))?;
    if bytes.starts_with(b"-----") {
        rustls_pemfile::crls(&mut BufReader::new(&bytes[..]))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("bad PEM in sslcrl {}: {e}", path.display()))
    } else {
        Ok(vec![CertificateRevocationListDer::from(bytes)])
    }
}

/// The result of the `SSLRequest` exchange on one socket.
pub(crate) struct Negotiated {
    /// The transport: TLS over TCP, or the TCP socket itself.
    pub io: super::BoxedIo,
    /// Present when TLS is up.
    pub tls: Option<TlsInfo>,
}

/// What the handshake established.
#[derive(Debug, Clone)]
pub struct TlsInfo {
    /// The certificate chain (and host name for `verify-full`) was checked.
    pub verified: bool,
    /// `tls-server-end-point` data for SCRAM-SHA-256-PLUS.
    pub end_point: Option<Vec<u8>>,
}

/// Sends `SSLRequest` (unless TLS is not wanted) and runs the handshake for
/// `server_name` when the server agrees; `plain_only` skips TLS (the first
/// attempt of `sslmode=allow`).
pub(crate) async fn negotiate(
    mut tcp: TcpStream,
    setup: &TlsSetup,
    server_name: &str,
    addr: &str,
    plain_only: bool,
) -> Result<Negotiated, ConnError> {
    let Some(config) = setup.config.as_ref().filter(|_| !plain_only) else {
        return Ok(Negotiated {
            io: Box::new(tcp),
            tls: None,
        });
    };
    let io_err = |source| ConnError::Io {
        addr: addr.to_string(),
        source,
    };
    let tls_err = |reason: String| ConnError::Tls {
        addr: addr.to_string(),
        reason,
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
        b'N' if matches!(setup.mode, SslMode::Prefer | SslMode::Allow) => {
            return Ok(Negotiated {
                io: Box::new(tcp),
                tls: None,
            });
        }
        b'N' => {
            return Err(tls_err(format!(
                "the server does not accept TLS connections, and sslmode={} requires TLS",
                setup.mode.as_str()
            )));
        }
        // An old server answers an unknown request with an ErrorResponse.
        b'E' => return Err(tls_err("the server rejected the SSLRequest".into())),
        other => {
            return Err(tls_err(format!(
                "unexpected answer {other:#04x} to SSLRequest"
            )));
        }
    }
    let name = ServerName::try_from(server_name.to_string()).map_err(|e| {
        tls_err(format!(
            "{server_name:?} is not a valid TLS server name: {e}"
        ))
    })?;
    let tls = tokio_rustls::TlsConnector::from(config.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| tls_err(handshake_message(&e, setup.mode)))?;
    let end_point = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|cert| end_point_hash(cert));
    Ok(Negotiated {
        io: Box::new(tls),
        tls: Some(TlsInfo {
            verified: setup.verifies(),
            end_point,
        }),
    })
}

/// rustls' words, with what the operator can do about the common cases.
fn handshake_message(e: &std::io::Error, mode: SslMode) -> String {
    let text = e.to_string();
    let hint = match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)) => {
            "; the server's certificate is not signed by a CA in sslrootcert"
        }
        Some(rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        )) => "; connect with the host name in the certificate, or use sslmode=verify-ca",
        _ => "",
    };
    format!("{text}{hint} (sslmode={})", mode.as_str())
}

/// `tls-server-end-point` (RFC 5929): the server certificate hashed with
/// its signature's hash function, SHA-256 for MD5 and SHA-1 (and whenever the
/// algorithm cannot be told).
pub fn end_point_hash(cert: &[u8]) -> Option<Vec<u8>> {
    use ring::digest;
    const SHA384: &[&[u8]] = &[
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c],
        &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03],
    ];
    const SHA512: &[&[u8]] = &[
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d],
        &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04],
    ];
    let oid = signature_algorithm_oid(cert);
    let algorithm = match oid {
        Some(oid) if SHA384.contains(&oid) => &digest::SHA384,
        Some(oid) if SHA512.contains(&oid) => &digest::SHA512,
        _ => &digest::SHA256,
    };
    Some(digest::digest(algorithm, cert).as_ref().to_vec())
}

/// The OID bytes of `Certificate.signatureAlgorithm.algorithm` (DER).
fn signature_algorithm_oid(der: &[u8]) -> Option<&[u8]> {
    fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let tag = *input.first()?;
        let first = *input.get(1)? as usize;
        let (len, header) = if first < 0x80 {
            (first, 2)
        } else {
            let n = first & 0x7f;
            if n == 0 || n > 4 {
                return None;
            }
            let mut len = 0usize;
            for i in 0..n {
                len = (len << 8) | *input.get(2 + i)? as usize;
            }
            (len, 2 + n)
        };
        let body = input.get(header..header + len)?;
        Some((tag, body, &input[header + len..]))
    }
    let (0x30, cert, _) = tlv(der)? else {
        return None;
    };
    let (0x30, _tbs, rest) = tlv(cert)? else {
        return None;
    };
    let (0x30, alg, _) = tlv(rest)? else {
        return None;
    };
    let (0x06, oid, _) = tlv(alg)? else {
        return None;
    };
    Some(oid)
}

/// `verify-ca`: the chain must lead to a trusted root; the name may differ.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `sslmode=prefer/require` without a root certificate: any certificate is
/// accepted, but the handshake signatures are still verified so the session
/// key is the certificate holder's (libpq semantics: encryption only).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_modes_need_a_root_certificate() {
        let params = SslParams {
            mode: SslMode::VerifyFull,
            ..SslParams::default()
        };
        let err = TlsSetup::build(&params).unwrap_err();
        assert!(err.contains("sslrootcert"), "{err}");
        let system = TlsSetup::build(&SslParams {
            rootcert: Some(RootCert::System),
            ..params
        })
        .unwrap();
        assert!(system.verifies());
    }

    #[test]
    fn require_without_root_encrypts_only() {
        let setup = TlsSetup::build(&SslParams {
            mode: SslMode::Require,
            ..SslParams::default()
        })
        .unwrap();
        assert_eq!(setup.mode, SslMode::Require);
        assert!(!setup.verifies());
        let setup = TlsSetup::build(&SslParams {
            mode: SslMode::Require,
            rootcert: Some(RootCert::System),
            ..SslParams::default()
        })
        .unwrap();
        assert_eq!(
            setup.mode,
            SslMode::VerifyCa,
            "libpq: require + root cert = verify-ca"
        );
    }

    #[test]
    fn signature_algorithm_of_a_der_certificate() {
        // SEQUENCE { SEQUENCE {} (tbs), SEQUENCE { OID ecdsa-with-SHA384 }, BIT STRING }
        let der = [
            0x30, 0x10, 0x30, 0x00, 0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04,
            0x03, 0x03, 0x03, 0x00,
        ];
        assert_eq!(
            signature_algorithm_oid(&der),
            Some(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03][..])
        );
        assert_eq!(end_point_hash(&der).unwrap().len(), 48);
        assert_eq!(end_point_hash(b"garbage").unwrap().len(), 32);
    }
}

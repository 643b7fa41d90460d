/*!
TLS for throwaway clusters: certificates made with the `openssl` CLI (a CA, a
server certificate for `localhost` only, client certificates per role, and a
second CA that signed none of them), and [`enable_tls`], which installs the
server's key pair, turns `ssl` on and replaces `pg_hba.conf` with
`hostssl`-only rules.
*/

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::cluster::Cluster;
use super::error::HarnessError;

/// The role that logs in with a client certificate (`cert` in pg_hba.conf).
pub const CERT_ROLE: &str = "pgsieve_cert";

/// `hostssl` only: the replicator with SCRAM, [`CERT_ROLE`] with a client
/// certificate, everyone else trusted (but over TLS). Unix sockets stay
/// trusted for `pg_ctl`.
pub const HOSTSSL_HBA: &str = "\
# pgsieve harness (TLS): every TCP connection must use TLS.
local   all         all                         trust
local   replication all                         trust
hostssl all         replicator  127.0.0.1/32    scram-sha-256
hostssl replication replicator  127.0.0.1/32    scram-sha-256
hostssl all         pgsieve_cert 127.0.0.1/32   cert
hostssl all         all         127.0.0.1/32    trust
hostssl replication all         127.0.0.1/32    trust
";

/// Certificates in a temp dir (removed on drop).
#[derive(Debug)]
pub struct Certs {
    dir: TempDir,
}

impl Certs {
    /// `ca.crt`, `server.crt`/`server.key` (`CN=localhost`, SAN `DNS:localhost`
    /// only), and `other-ca.crt`, a CA that signed nothing here.
    pub fn generate() -> Result<Certs, HarnessError> {
        let dir = tempfile::Builder::new()
            .prefix("pgsieve-certs-")
            .tempdir()
            .map_err(|e| HarnessError::io("creating a certificate dir", e))?;
        let certs = Certs { dir };
        certs.self_signed("ca", "pgsieve test CA")?;
        certs.self_signed("other-ca", "pgsieve unrelated CA")?;
        certs.signed("server", "localhost", "subjectAltName=DNS:localhost")?;
        Ok(certs)
    }

    /// A client certificate `<role>.crt`/`<role>.key` (`CN=<role>`), signed
    /// by the CA; the key is mode 0600 as libpq (and pgsieve) insist.
    pub fn client(&self, role: &str) -> Result<(PathBuf, PathBuf), HarnessError> {
        // An extension makes it X.509 v3, which rustls insists on.
        self.signed(role, role, "extendedKeyUsage=clientAuth")?;
        Ok((
            self.path(&format!("{role}.crt")),
            self.path(&format!("{role}.key")),
        ))
    }

    /// A CRL (PEM) from the CA that revokes `name.crt` (e.g. `server`).
    pub fn revoking(&self, name: &str) -> Result<PathBuf, HarnessError> {
        let write = |file: &str, text: &str| {
            std::fs::write(self.path(file), text)
                .map_err(|e| HarnessError::io("writing openssl CA files", e))
        };
        write("index.txt", "")?;
        write("crlnumber", "01\n")?;
        write(
            "ca.cnf",
            "[ca]\ndefault_ca = pgsieve\n[pgsieve]\ndatabase = index.txt\n\
             crlnumber = crlnumber\ndefault_md = sha256\ndefault_crl_days = 2\n",
        )?;
        let crt = format!("{name}.crt");
        let crl = format!("{name}.crl");
        let ca = ["-config", "ca.cnf", "-keyfile", "ca.key", "-cert", "ca.crt"];
        self.openssl(&[&["ca"][..], &ca, &["-revoke", &crt]].concat())?;
        self.openssl(&[&["ca"][..], &ca, &["-gencrl", "-out", &crl]].concat())?;
        Ok(self.path(&crl))
    }

    /// A file in the certificate dir.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn openssl(&self, args: &[&str]) -> Result<(), HarnessError> {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .map_err(|e| HarnessError::io("running openssl (is it installed?)", e))?;
        if !out.status.success() {
            return Err(HarnessError::Usage(format!(
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(())
    }

    fn self_signed(&self, name: &str, cn: &str) -> Result<(), HarnessError> {
        let (key, crt, subj) = (
            format!("{name}.key"),
            format!("{name}.crt"),
            format!("/CN={cn}"),
        );
        let mut args = vec!["req", "-x509"];
        args.extend(EC_KEY);
        args.extend(["-keyout", &key, "-out", &crt, "-days", "2", "-subj", &subj]);
        self.openssl(&args)?;
        self.private(&key)
    }

    fn signed(&self, name: &str, cn: &str, ext: &str) -> Result<(), HarnessError> {
        let (key, csr, crt) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
        );
        let subj = format!("/CN={cn}");
        let mut args = vec!["req"];
        args.extend(EC_KEY);
        args.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
        self.openssl(&args)?;
        self.private(&key)?;
        let ext_file = format!("{name}.ext");
        std::fs::write(self.path(&ext_file), format!("{ext}\n"))
            .map_err(|e| HarnessError::io("writing an openssl extension file", e))?;
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &crt,
            "-days",
            "2",
            "-extfile",
            &ext_file,
        ])
    }

    fn private(&self, name: &str) -> Result<(), HarnessError> {
        std::fs::set_permissions(self.path(name), std::fs::Permissions::from_mode(0o600))
            .map_err(|e| HarnessError::io("chmod 0600 of a key", e))
    }
}

const EC_KEY: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
];

/// Installs `server.crt`/`server.key` and `ca.crt` (for client certificates)
/// in the data dir, owned like it and mode 0600, turns `ssl` on, writes
/// `hba` as `pg_hba.conf`, and reloads; returns once `SHOW ssl` says `on`.
pub fn enable_tls(cluster: &Cluster, certs: &Certs, hba: &str) -> Result<(), HarnessError> {
    let data = cluster.data_dir();
    let meta = std::fs::metadata(&data).map_err(|e| HarnessError::io("reading PGDATA", e))?;
    for name in ["server.crt", "server.key", "ca.crt"] {
        let target: &Path = &data.join(name);
        std::fs::copy(certs.path(name), target)
            .map_err(|e| HarnessError::io("copying a certificate into PGDATA", e))?;
        std::fs::set_permissions(target, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| HarnessError::io("chmod of a certificate", e))?;
        std::os::unix::fs::chown(target, Some(meta.uid()), Some(meta.gid()))
            .map_err(|e| HarnessError::io("chown of a certificate", e))?;
    }
    std::fs::write(data.join("pg_hba.conf"), hba)
        .map_err(|e| HarnessError::io("writing pg_hba.conf", e))?;
    cluster.psql("postgres", "ALTER SYSTEM SET ssl = on")?;
    cluster.psql("postgres", "ALTER SYSTEM SET ssl_ca_file = 'ca.crt'")?;
    cluster.psql("postgres", "SELECT pg_reload_conf()")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while cluster.psql("postgres", "SHOW ssl")? != "on" {
        if Instant::now() > deadline {
            return Err(HarnessError::Usage(format!(
                "ssl never turned on in {}",
                cluster.name()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

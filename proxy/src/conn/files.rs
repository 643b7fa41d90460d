//! Secrets on disk: password files and private keys must not be readable by
//! group or others (libpq's rule for `sslkey` and `.pgpass`), so a file
//! created with the default umask is refused with a message that says how
//! to fix it, before anything connects.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Checks that `path` is a regular file nobody but its owner (or, for a
/// root-owned file, root's group) can read.
pub fn check_private_file(path: &Path, what: &str) -> Result<(), String> {
    let meta = std::fs::metadata(path)
        .map_err(|e| format!("cannot read {what} {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{what} {} is not a regular file", path.display()));
    }
    let mode = meta.mode() & 0o777;
    // libpq: 0600 or stricter; a root-owned file may also be group-readable
    // (0640), for keys shared with a service group.
    let allowed = if meta.uid() == 0 { 0o740 } else { 0o700 };
    if mode & !allowed != 0 {
        return Err(format!(
            "{what} {} has permissions {mode:04o}: it must not be readable by group or others (chmod 0600 {}, or 0640 when owned by root)",
            path.display(),
            path.display()
        ));
    }
    Ok(())
}

/// The first line of a password file, after the permission check.
pub fn read_password_file(path: &Path, what: &str) -> Result<String, String> {
    check_private_file(path, what)?;
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {what} {}: {e}", path.display()))?;
    Ok(text.lines().next().unwrap_or("").to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn world_readable_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "secret\nignored\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_password_file(&path, "password file").unwrap_err();
        assert!(err.contains("0644") && err.contains("chmod 0600"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            read_password_file(&path, "password file").unwrap(),
            "secret"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert!(check_private_file(&path, "key").is_ok());
        assert!(check_private_file(dir.path(), "key").is_err());
    }
}

//! TLS files read once at start-up, with errors that name the setting and the
//! file: the listener's certificate chain and key (rustls with the ring
//! provider), and the extra roots trusted for HTTPS participants.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::settings::TlsFiles;

/// A server configuration for `files`, or why it cannot be built.
pub fn server_config(files: &TlsFiles) -> anyhow::Result<rustls::ServerConfig> {
    let certs = certificates("server.tls_cert", &files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| {
        anyhow::anyhow!(
            "server.tls_key: cannot read a PEM private key from {}: {e}",
            files.key.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow::anyhow!("TLS protocol versions: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            anyhow::anyhow!(
                "server.tls_key: {} does not fit the certificate in {}: {e}",
                files.key.display(),
                files.cert.display()
            )
        })
}

/// The certificates of `participants.ca_file`, trusted for HTTPS participants
/// besides the system's roots; none without the setting.
pub fn participant_roots(ca_file: Option<&Path>) -> anyhow::Result<Vec<reqwest::Certificate>> {
    let Some(path) = ca_file else {
        return Ok(Vec::new());
    };
    certificates("participants.ca_file", path)?
        .iter()
        .map(|der| {
            reqwest::Certificate::from_der(der).map_err(|e| {
                anyhow::anyhow!(
                    "participants.ca_file: a certificate in {} is unusable: {e}",
                    path.display()
                )
            })
        })
        .collect()
}

/// The PEM certificates in `path`, at least one, or why not (naming `setting`).
fn certificates(setting: &str, path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<_, _>>())
        .map_err(|e| {
            anyhow::anyhow!(
                "{setting}: cannot read PEM certificates from {}: {e}",
                path.display()
            )
        })?;
    anyhow::ensure!(
        !certs.is_empty(),
        "{setting}: {} holds no certificate",
        path.display()
    );
    Ok(certs)
}

//! TLS files read once at start-up, with errors that name the setting and the
//! file: the listener's certificate chain and key (rustls with the ring
//! provider), and the roots trusted for HTTPS participants (the system's and
//! `participants.ca_file`).

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

/// The client configuration for outgoing HTTPS (participants, the webhook): the
/// system's roots, as far as they parse, and the certificates of
/// `participants.ca_file` besides, which must all be usable.
pub fn participant_client_config(ca_file: Option<&Path>) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if let Some(path) = ca_file {
        for der in certificates("participants.ca_file", path)? {
            roots.add(der).map_err(|e| {
                anyhow::anyhow!(
                    "participants.ca_file: a certificate in {} is unusable: {e}",
                    path.display()
                )
            })?;
        }
    }
    if roots.is_empty() {
        tracing::warn!(
            "no trusted root certificates (none on the system, no participants.ca_file): \
             HTTPS participants cannot be called"
        );
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow::anyhow!("TLS protocol versions: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
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

//! The rustls client configuration for the backend: the system's roots, one extra
//! CA when configured, or no verification at all when the operator asks for it.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

#[derive(Debug)]
pub struct TlsError(pub String);

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsError {}

/// Builds the client config. `alpn` is offered in order (e.g. `h2`).
pub fn client_config(
    extra_ca: Option<&Path>,
    insecure: bool,
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(format!("TLS protocol versions: {e}")))?;
    let mut config = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
            .with_no_client_auth()
    } else {
        builder.with_root_certificates(root_store(extra_ca)?).with_no_client_auth()
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

fn root_store(extra_ca: Option<&Path>) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        // A malformed system certificate is skipped, not fatal.
        let _ = roots.add(cert);
    }
    if let Some(path) = extra_ca {
        let pem = std::fs::read(path).map_err(|e| TlsError(format!("reading {}: {e}", path.display())))?;
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| TlsError(format!("parsing {}: {e}", path.display())))?;
            roots.add(cert).map_err(|e| TlsError(format!("adding a CA from {}: {e}", path.display())))?;
            added += 1;
        }
        if added == 0 {
            return Err(TlsError(format!("{}: no PEM certificate found", path.display())));
        }
    }
    if roots.is_empty() {
        return Err(TlsError(
            "no trusted CA certificates: none found on the system and no --openai-ca given".into(),
        ));
    }
    Ok(roots)
}

/// OPENAI_INSECURE_SSL=true: accept any certificate, still check signatures so the
/// handshake itself is sound.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
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
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca_file(name: &str, contents: &[u8]) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("handoff-tls-{}-{name}.pem", std::process::id()));
        std::fs::write(&path, contents).expect("write the test CA file");
        path
    }

    #[test]
    fn a_ca_file_without_certificates_is_an_error_naming_the_file() {
        let path = ca_file("empty", b"not a certificate\n");
        let error = root_store(Some(&path)).err().map(|e| e.0).unwrap_or_default();
        let _ = std::fs::remove_file(&path);
        assert!(error.contains("no PEM certificate found"), "{error}");
        assert!(error.contains(&path.display().to_string()), "{error}");
    }

    #[test]
    fn a_corrupt_certificate_section_is_an_error_not_skipped() {
        let path = ca_file("corrupt", b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n");
        let error = root_store(Some(&path)).err().map(|e| e.0).unwrap_or_default();
        let _ = std::fs::remove_file(&path);
        assert!(error.starts_with(&format!("parsing {}", path.display())), "{error}");
    }

    #[test]
    fn a_missing_ca_file_is_an_error_naming_it() {
        let path = std::path::Path::new("/nonexistent/handoff-ca.pem");
        let error = root_store(Some(path)).err().map(|e| e.0).unwrap_or_default();
        assert!(error.starts_with("reading /nonexistent/handoff-ca.pem"), "{error}");
    }
}

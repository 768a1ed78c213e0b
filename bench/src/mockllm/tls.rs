//! A throwaway certificate authority, made at start: its certificate is what clients
//! trust (`--openai-ca`); it signs one server certificate for `localhost`, `127.0.0.1`
//! and `::1`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::ServerConfig;

/// Why TLS could not be set up.
#[derive(Debug)]
pub enum TlsSetupError {
    /// Generating a key or certificate failed.
    Certificate(rcgen::Error),
    /// rustls refused the generated certificate or its protocol settings.
    Config(rustls::Error),
}

impl fmt::Display for TlsSetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsSetupError::Certificate(e) => {
                write!(f, "mock-llm could not generate its TLS certificates: {e}")
            }
            TlsSetupError::Config(e) => write!(f, "mock-llm TLS server configuration rejected: {e}"),
        }
    }
}

impl std::error::Error for TlsSetupError {}

impl From<rcgen::Error> for TlsSetupError {
    fn from(e: rcgen::Error) -> Self {
        TlsSetupError::Certificate(e)
    }
}

impl From<rustls::Error> for TlsSetupError {
    fn from(e: rustls::Error) -> Self {
        TlsSetupError::Config(e)
    }
}

/// The generated server identity.
pub(crate) struct ServerTls {
    pub config: Arc<ServerConfig>,
    /// The CA certificate, PEM: what a client adds to its roots.
    pub ca_pem: String,
}

/// Makes a fresh CA and server certificate and a rustls config offering ALPN `h2` and
/// `http/1.1`.
pub(crate) fn generate() -> Result<ServerTls, TlsSetupError> {
    let mut ca_params = CertificateParams::new(Vec::new())?;
    ca_params.distinguished_name.push(DnType::CommonName, "mock-llm test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let ca = Issuer::new(ca_params, ca_key);

    let mut server_params = CertificateParams::new(vec![String::from("localhost")])?;
    server_params.subject_alt_names.push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    server_params.subject_alt_names.push(SanType::IpAddress(IpAddr::V6(Ipv6Addr::LOCALHOST)));
    server_params.distinguished_name.push(DnType::CommonName, "mock-llm");
    server_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_key = KeyPair::generate()?;
    let server_cert = server_params.signed_by(&server_key, &ca)?;

    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![server_cert.der().clone()], key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(ServerTls { config: Arc::new(config), ca_pem: ca_cert.pem() })
}

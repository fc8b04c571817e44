//! TLS to PostgreSQL with rustls, following libpq's `sslmode` semantics.
//!
//! - `verify-full`: the server certificate must chain to a CA in `sslrootcert` and name
//!   the host connected to. The only mode that stops an active attacker.
//! - `verify-ca`, and `require` given a root certificate (libpq's rule): the chain is
//!   checked, the host name is not.
//! - `require` without a root certificate, and `prefer`: encrypted, the certificate not
//!   checked, exactly as libpq does. The handshake signature still is: a server must hold
//!   the key of the certificate it shows.
//! - `disable`: tokio-postgres never calls the connector.
//!
//! The connector is built for each new connection, reading the CA file again, so that a
//! renewed CA needs no restart. That costs a file read and a parse per connection, which
//! the pool makes rare.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::{DatabaseConfig, Verification};

/// Why no TLS connector could be built: the CA file, mostly.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS set-up failed: {0}")]
    Setup(#[source] rustls::Error),
    #[error("cannot read sslrootcert {}: {source}", path.display())]
    UnreadableRoots {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("sslrootcert {} holds no certificate", .0.display())]
    NoCertificate(PathBuf),
}

/// The connector for `config`'s `sslmode`, with the CA file as it is now.
pub fn connector(config: &DatabaseConfig) -> Result<MakeRustlsConnect, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Setup)?;
    let client = match config.verification() {
        Verification::ChainAndHost(path) => builder
            .with_root_certificates(read_roots(&path)?)
            .with_no_client_auth(),
        Verification::Chain(path) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NameBlind {
                roots: Some(read_roots(&path)?),
                provider,
            }))
            .with_no_client_auth(),
        Verification::None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NameBlind {
                roots: None,
                provider,
            }))
            .with_no_client_auth(),
    };
    Ok(MakeRustlsConnect::new(client))
}

fn read_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::UnreadableRoots {
            path: path.to_owned(),
            source,
        })?;
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(TlsError::NoCertificate(path.to_owned()));
    }
    Ok(roots)
}

/// A verifier that never checks the name in the certificate. With `roots`, the chain up
/// to one of them is checked (validity dates, key usage, signatures): libpq's
/// `verify-ca`. Without, any certificate is accepted: libpq's `require` without a root
/// certificate. Either way the handshake signature is checked.
#[derive(Debug)]
struct NameBlind {
    roots: Option<RootCertStore>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for NameBlind {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(roots) = &self.roots {
            verify_server_cert_signed_by_trust_anchor(
                &ParsedCertificate::try_from(end_entity)?,
                roots,
                intermediates,
                now,
                self.provider.signature_verification_algorithms.all,
            )?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

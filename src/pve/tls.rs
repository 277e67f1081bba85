//! TLS for the PVE/PBS clients, rustls only: pinned SHA-256 leaf
//! fingerprints (the `AB:CD:...` form the PVE GUI shows), a CA file, or no
//! verification at all (`insecure: true`, warned about on every run).
//!
//! A pin mismatch aborts the handshake, so no request (and no credential)
//! is ever sent to a server we did not expect; the verifier remembers the
//! fingerprint it saw so the error can print it.

use super::error::{PveError, PveResult};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// How to check the server certificate.
#[derive(Debug, Clone)]
pub enum TlsMode {
    /// One or more pinned SHA-256 fingerprints (any matches).
    Pinned(Vec<[u8; 32]>),
    /// Verify the chain against this CA bundle (PEM) and the host name.
    CaFile(PathBuf),
    /// The system's web PKI roots (a publicly trusted certificate).
    WebPki,
    /// No verification at all.
    Insecure,
}

/// Parse `AB:CD:...` (32 colon-separated hex pairs, any case).
pub fn parse_fingerprint(s: &str) -> PveResult<[u8; 32]> {
    let parts: Vec<&str> = s.trim().split(':').collect();
    let bad = || {
        PveError::Config(format!(
            "malformed fingerprint '{s}': expected 32 colon-separated hex pairs (AB:CD:...)"
        ))
    };
    if parts.len() != 32 {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, p) in parts.iter().enumerate() {
        if p.len() != 2 {
            return Err(bad());
        }
        out[i] = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    Ok(out)
}

/// `AB:CD:...` of a certificate (upper case, as the PVE GUI shows it).
pub fn fingerprint_of(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A verifier that accepts exactly the pinned leaf certificates (or, when
/// `pins` is empty, anything: insecure mode). Signatures are still checked
/// so the peer must hold the key of the certificate it shows.
#[derive(Debug)]
pub struct PinVerifier {
    pins: Vec<[u8; 32]>,
    provider: Arc<CryptoProvider>,
    /// The fingerprint of the last certificate that failed the pin.
    pub seen: Arc<Mutex<Option<String>>>,
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.pins.is_empty() {
            return Ok(ServerCertVerified::assertion());
        }
        let digest: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if self.pins.contains(&digest) {
            return Ok(ServerCertVerified::assertion());
        }
        let seen = fingerprint_of(end_entity.as_ref());
        if let Ok(mut s) = self.seen.lock() {
            *s = Some(seen.clone());
        }
        Err(rustls::Error::General(format!(
            "certificate fingerprint {seen} matches no pinned fingerprint"
        )))
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

/// A rustls client config for `mode`, plus the slot where a pin mismatch
/// leaves the fingerprint it saw.
pub fn client_config(
    mode: &TlsMode,
) -> PveResult<(rustls::ClientConfig, Arc<Mutex<Option<String>>>)> {
    let seen = Arc::new(Mutex::new(None));
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| PveError::Config(format!("TLS setup: {e}")))?;
    let config = match mode {
        TlsMode::Pinned(_) | TlsMode::Insecure => {
            let pins = match mode {
                TlsMode::Pinned(p) => p.clone(),
                _ => Vec::new(),
            };
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinVerifier {
                    pins,
                    provider: provider(),
                    seen: seen.clone(),
                }))
                .with_no_client_auth()
        }
        TlsMode::CaFile(path) => {
            use rustls::pki_types::pem::PemObject;
            let mut roots = rustls::RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| PveError::Config(format!("ca_file {}: {e}", path.display())))?;
            for c in certs {
                let c =
                    c.map_err(|e| PveError::Config(format!("ca_file {}: {e}", path.display())))?;
                roots
                    .add(c)
                    .map_err(|e| PveError::Config(format!("ca_file {}: {e}", path.display())))?;
            }
            if roots.is_empty() {
                return Err(PveError::Config(format!(
                    "ca_file {}: no PEM certificate in it",
                    path.display()
                )));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        TlsMode::WebPki => {
            return Err(PveError::Config(
                "web PKI mode uses reqwest's built-in roots, not a custom config".into(),
            ))
        }
    };
    Ok((config, seen))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_in_either_case_and_reject_malformed_ones() {
        let fp = (0..32)
            .map(|i| format!("{i:02x}"))
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(parse_fingerprint(&fp).unwrap()[31], 31);
        assert_eq!(parse_fingerprint(&fp.to_uppercase()).unwrap()[10], 10);
        for bad in ["", "AB:CD", &fp[..fp.len() - 1], &fp.replace(':', "")] {
            assert!(parse_fingerprint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn fingerprint_is_upper_case_colon_hex() {
        let f = fingerprint_of(b"x");
        assert_eq!(f.len(), 32 * 3 - 1);
        assert_eq!(f, f.to_uppercase());
    }
}

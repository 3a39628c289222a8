//! The dev CA of the local gateway: one CA signs the HTTPS listener's certificate, the
//! gateway's client certificate and each mock upstream's server certificate.
//!
//! In the cluster, ISTIO_MUTUAL uses workload certificates issued by istiod with SPIFFE
//! identities. Here the dev CA stands in for istiod: every certificate carries the SPIFFE
//! URI its workload would have, and Envoy checks the upstream's URI as Istio does.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::error::{Error, Result};

/// The gateway's identity in the cluster (the ingress gateway's service account).
pub const GATEWAY_SPIFFE_ID: &str =
    "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account";

/// A certificate and its private key, PEM and DER.
pub struct IssuedCert {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_der: Vec<u8>,
    pub key_der: Vec<u8>,
}

/// The CA and everything it signed, written to files Envoy (and curl) read.
pub struct DevPki {
    pub ca_path: PathBuf,
    pub ca_der: Vec<u8>,
    /// The HTTPS listener's certificate (localhost, 127.0.0.1, the API host).
    pub listener_cert_path: PathBuf,
    pub listener_key_path: PathBuf,
    /// The gateway's client certificate towards the upstreams.
    pub client_cert_path: PathBuf,
    pub client_key_path: PathBuf,
    ca_cert: rcgen::Certificate,
    ca_key: KeyPair,
}

fn pki_error(error: rcgen::Error) -> Error {
    Error::new(format!("dev CA: {error}"))
}

impl DevPki {
    /// A fresh CA in `dir` (`ca.pem`, `gateway-*.pem`, `client-*.pem`). A new CA per start
    /// keeps no long-lived private key around; `ca.pem` keeps its path, so a client's
    /// `--cacert` stays valid across restarts.
    pub fn create(dir: &Path, listener_hosts: &[&str]) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(pki_error)?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "svc-gateway local dev CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate().map_err(pki_error)?;
        let ca_cert = ca_params.self_signed(&ca_key).map_err(pki_error)?;
        let ca_path = dir.join("ca.pem");
        std::fs::write(&ca_path, ca_cert.pem())?;
        let ca_der = ca_cert.der().to_vec();

        let mut pki = Self {
            ca_path,
            ca_der,
            listener_cert_path: dir.join("gateway-cert.pem"),
            listener_key_path: dir.join("gateway-key.pem"),
            client_cert_path: dir.join("client-cert.pem"),
            client_key_path: dir.join("client-key.pem"),
            ca_cert,
            ca_key,
        };
        let hosts: Vec<String> = listener_hosts.iter().map(|h| (*h).to_owned()).collect();
        let listener = pki.issue(&hosts, None, ExtendedKeyUsagePurpose::ServerAuth)?;
        write_pair(&pki.listener_cert_path, &pki.listener_key_path, &listener)?;
        let client = pki.issue(
            &[],
            Some(GATEWAY_SPIFFE_ID),
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        write_pair(&pki.client_cert_path, &pki.client_key_path, &client)?;
        pki.ca_path = pki.ca_path.canonicalize()?;
        Ok(pki)
    }

    /// A server certificate for an upstream: its DNS name and SPIFFE identity.
    pub fn issue_upstream(&self, dns_name: &str, spiffe_id: &str) -> Result<IssuedCert> {
        self.issue(
            &[dns_name.to_owned()],
            Some(spiffe_id),
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    fn issue(
        &self,
        hosts: &[String],
        spiffe_id: Option<&str>,
        usage: ExtendedKeyUsagePurpose,
    ) -> Result<IssuedCert> {
        // `new` turns host strings that parse as IP addresses into IP SANs.
        let mut params = CertificateParams::new(hosts.to_vec()).map_err(pki_error)?;
        params
            .distinguished_name
            .push(DnType::CommonName, "svc-gateway local dev");
        if let Some(id) = spiffe_id {
            let uri = rcgen::Ia5String::try_from(id.to_owned()).map_err(pki_error)?;
            params.subject_alt_names.push(SanType::URI(uri));
        }
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().map_err(pki_error)?;
        let cert = params
            .signed_by(&key, &self.ca_cert, &self.ca_key)
            .map_err(pki_error)?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().to_vec(),
            key_der: key.serialize_der(),
        })
    }
}

fn write_pair(cert_path: &Path, key_path: &Path, issued: &IssuedCert) -> Result<()> {
    std::fs::write(cert_path, &issued.cert_pem)?;
    std::fs::write(key_path, &issued.key_pem)?;
    Ok(())
}

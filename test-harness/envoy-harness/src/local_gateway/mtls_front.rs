//! mTLS in front of a [`MockUpstream`](crate::MockUpstream): accepts TLS only from clients
//! with a certificate of the dev CA (the gateway's), and pipes the decrypted bytes to the
//! mock's plain port. The mock stays the same one the other tests use; the gateway's
//! cluster speaks ISTIO_MUTUAL-style mTLS to this front, as it would to a sidecar.

use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdTcpListener};
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::oneshot;
use tokio_rustls::rustls::crypto::ring::default_provider;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

use super::pki::IssuedCert;
use crate::error::{Error, Result};

pub struct MtlsFront {
    port: u16,
    /// `true`: the replica is down (connections closed, new ones dropped at once).
    down: tokio::sync::watch::Sender<bool>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

fn tls_error(error: impl std::fmt::Display) -> Error {
    Error::new(format!("mTLS front: {error}"))
}

impl MtlsFront {
    /// Listens on a free loopback port; forwards to `127.0.0.1:target_port`.
    pub fn start(ca_der: &[u8], server: &IssuedCert, target_port: u16) -> Result<Self> {
        let provider = Arc::new(default_provider());
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from(ca_der.to_vec()))
            .map_err(tls_error)?;
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(tls_error)?;
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(tls_error)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![CertificateDer::from(server.cert_der.clone())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server.key_der.clone())),
            )
            .map_err(tls_error)?;
        let acceptor = TlsAcceptor::from(Arc::new(config));

        let listener = StdTcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (shutdown, mut stop) = oneshot::channel::<()>();
        let (down, down_signal) = tokio::sync::watch::channel(false);
        let thread = std::thread::Builder::new()
            .name(format!("mtls-front-{port}"))
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    loop {
                        tokio::select! {
                            _ = &mut stop => return,
                            accepted = listener.accept() => {
                                let Ok((stream, _)) = accepted else { continue };
                                if *down_signal.borrow() {
                                    // A crashed pod: the connection closes before TLS.
                                    drop(stream);
                                    continue;
                                }
                                let acceptor = acceptor.clone();
                                let mut down_signal = down_signal.clone();
                                tokio::spawn(async move {
                                    // A handshake without the gateway's certificate fails
                                    // here, which is the point.
                                    let Ok(tls) = acceptor.accept(stream).await else {
                                        return;
                                    };
                                    let target = SocketAddr::from((Ipv4Addr::LOCALHOST, target_port));
                                    let Ok(plain) = tokio::net::TcpStream::connect(target).await else {
                                        return;
                                    };
                                    tokio::select! {
                                        () = pipe(tls, plain) => {}
                                        _ = down_signal.wait_for(|down| *down) => {}
                                    }
                                });
                            }
                        }
                    }
                });
            })?;
        Ok(Self {
            port,
            down,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Takes the replica down (every connection closed, new ones refused) or back up.
    pub fn set_down(&self, down: bool) {
        self.down.send_replace(down);
    }
}

/// Bytes both ways until either side closes. A slow or failing upstream is the mock's
/// business (its fault rules), not the front's.
async fn pipe<T>(tls: T, mut plain: tokio::net::TcpStream)
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut tls = tls;
    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
}

impl Drop for MtlsFront {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

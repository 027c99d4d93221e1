//! A TCP proxy in front of a real broker that can freeze: while frozen it
//! keeps every connection open but forwards nothing, as a broker does that
//! hangs (a memory alarm, a stalled disk, a network partition). Fault
//! tests put it between a bus and the shared broker instead of stopping
//! the broker.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A running proxy; dropping it does not stop it (its tasks end with the
/// test's runtime).
#[derive(Debug, Clone)]
pub struct FreezableProxy {
    /// Where the proxy listens (`127.0.0.1:port`).
    pub addr: SocketAddr,
    frozen: Arc<AtomicBool>,
}

impl FreezableProxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let proxy = FreezableProxy {
            addr: listener.local_addr()?,
            frozen: Arc::new(AtomicBool::new(false)),
        };
        let frozen = Arc::clone(&proxy.frozen);
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let frozen = Arc::clone(&frozen);
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (ri, wi) = inbound.into_split();
                    let (ro, wo) = outbound.into_split();
                    tokio::spawn(pump(ri, wo, Arc::clone(&frozen)));
                    tokio::spawn(pump(ro, wi, frozen));
                });
            }
        });
        Ok(proxy)
    }

    /// Stops forwarding (connections stay open), or resumes.
    pub fn set_frozen(&self, frozen: bool) {
        self.frozen.store(frozen, Ordering::SeqCst);
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        while frozen.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // Held, not forwarded, while frozen.
        while frozen.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

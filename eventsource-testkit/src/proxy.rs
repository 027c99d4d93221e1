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

use eventsource_core::{Error, EventBus};
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

/// The publish-timeout case every broker backend runs: `bus` talks to its
/// broker through `proxy`; a first publish succeeds, then the proxy freezes
/// and a second publish must fail with [`Error::Timeout`] within
/// `publish_timeout` + 1 s. Returns the error's text (for the backend's
/// own checks on what it names); unfreezes and shuts the bus down.
pub async fn publish_gives_up_within_its_timeout(
    bus: &dyn EventBus,
    proxy: &FreezableProxy,
    publish_timeout: Duration,
) -> String {
    bus.publish(&[crate::probe("a", 1, 1)])
        .await
        .expect("publish through the open proxy");
    proxy.set_frozen(true);
    let started = tokio::time::Instant::now();
    let outcome = tokio::time::timeout(
        publish_timeout * 10 + Duration::from_secs(10),
        bus.publish(&[crate::probe("a", 2, 2)]),
    )
    .await
    .unwrap_or_else(|_| {
        panic!(
            "publish still running {:?} after the broker froze",
            started.elapsed()
        )
    });
    let took = started.elapsed();
    let err = outcome.expect_err("nothing can be acknowledged while the broker hangs");
    println!("publish gave up after {took:?}: {err}");
    assert!(
        took <= publish_timeout + Duration::from_secs(1),
        "publish took {took:?}, past publish_timeout ({publish_timeout:?}) + 1 s"
    );
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    proxy.set_frozen(false);
    let _ = bus.shutdown(Duration::from_secs(2)).await;
    err.to_string()
}

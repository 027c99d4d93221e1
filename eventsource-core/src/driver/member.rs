//! A bus's running members: subscribe / unsubscribe / shutdown bookkeeping,
//! and joining a member's tasks when it stops.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, MutexGuard};
use tokio_util::sync::CancellationToken;

use crate::Subscription;

/// Waits for a member's tasks — `helpers` tasks first (reader, refresher),
/// then its workers — until `deadline` (or for as long as they take
/// without one), aborting those still running then. Returns how many
/// *workers* were aborted: handlers cut off mid-flight.
pub async fn join_tasks(
    tasks: Vec<tokio::task::JoinHandle<()>>,
    helpers: usize,
    deadline: Option<tokio::time::Instant>,
) -> usize {
    let mut abandoned = 0;
    for (i, mut task) in tasks.into_iter().enumerate() {
        let finished = match deadline {
            Some(d) => tokio::time::timeout_at(d, &mut task).await.is_ok(),
            None => {
                // A task that panicked has nothing left to clean up.
                let _ = (&mut task).await;
                true
            }
        };
        if !finished {
            task.abort();
            if i >= helpers {
                abandoned += 1;
            }
        }
    }
    abandoned
}

/// The tasks of one running member, its helpers (reader, refresher) and
/// its workers, and the token that stops them all.
#[derive(Debug)]
pub struct MemberTasks {
    stop: CancellationToken,
    helpers: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    workers: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl MemberTasks {
    /// No tasks yet; `stop` (from [`Members::stop_token`]) stops them.
    pub fn new(stop: CancellationToken) -> Self {
        MemberTasks {
            stop,
            helpers: Mutex::new(Vec::new()),
            workers: Mutex::new(Vec::new()),
        }
    }

    /// Cancelled when the member stops or the bus shuts down.
    pub fn token(&self) -> &CancellationToken {
        &self.stop
    }

    /// Spawns a helper: a task that fetches or keeps leases, and handles
    /// nothing itself. Helpers are joined before the workers.
    pub fn helper(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.helpers.lock().push(tokio::spawn(task));
    }

    /// Spawns a worker (one that runs handlers: a [`Worker`](super::Worker)).
    pub fn worker(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.workers.lock().push(tokio::spawn(task));
    }

    /// Cancels the token and joins the helpers, then the workers, until
    /// `deadline` ([`join_tasks`]); returns how many workers were aborted.
    pub async fn stop(&self, deadline: Option<tokio::time::Instant>) -> usize {
        self.stop.cancel();
        let mut tasks: Vec<_> = self.helpers.lock().drain(..).collect();
        let helpers = tasks.len();
        tasks.extend(self.workers.lock().drain(..));
        join_tasks(tasks, helpers, deadline).await
    }
}

/// A running subscription member that a backend can stop.
#[async_trait::async_trait]
pub trait Member: Send + Sync + 'static {
    /// Stops fetching, lets in-flight handlers finish (until `deadline`,
    /// if any, then aborts them) and leaves the group; returns how many
    /// handlers were aborted.
    async fn stop(&self, deadline: Option<tokio::time::Instant>) -> usize;
}

struct Registered<M> {
    group: String,
    filter: String,
    member: Arc<M>,
}

/// The members of a bus and its open/closed state: what every backend's
/// `subscribe`, `unsubscribe` and `shutdown` share.
pub struct Members<M: Member> {
    bus: &'static str,
    /// Each running member with its group and canonical filter.
    members: Mutex<HashMap<u64, Registered<M>>>,
    next: AtomicU64,
    closed: AtomicBool,
    shutdown: CancellationToken,
}

impl<M: Member> Members<M> {
    /// No members yet; `bus` names the bus in errors (`"redis bus"`).
    pub fn new(bus: &'static str) -> Arc<Self> {
        Arc::new(Members {
            bus,
            members: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            shutdown: CancellationToken::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Registered<M>>> {
        self.members.lock()
    }

    /// Refuses `subscription` when a running member of its group (on this
    /// bus) uses another filter: [`Error::GroupFilterConflict`](crate::Error::GroupFilterConflict).
    /// Backends whose members live in other processes too check the broker
    /// as well.
    pub fn check_filter(&self, subscription: &Subscription) -> crate::Result<()> {
        let requested = subscription.filter().canonical();
        let members = self.lock();
        let other = members
            .values()
            .find(|r| r.group == subscription.group() && r.filter != requested);
        match other {
            Some(r) => Err(crate::Error::group_filter_conflict(
                &r.group, &r.filter, &requested,
            )),
            None => Ok(()),
        }
    }

    /// [`Error::ShutDown`](crate::Error::ShutDown) once [`shutdown`](Self::shutdown) began.
    pub fn check_open(&self) -> crate::Result<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(crate::Error::ShutDown(self.bus))
        } else {
            Ok(())
        }
    }

    /// A token cancelled at shutdown, for a new member's tasks.
    pub fn stop_token(&self) -> CancellationToken {
        self.shutdown.child_token()
    }

    /// The members running now.
    pub fn all(&self) -> Vec<Arc<M>> {
        self.lock()
            .values()
            .map(|r| Arc::clone(&r.member))
            .collect()
    }

    /// Registers a started member of `subscription`'s group; its handle's
    /// `unsubscribe` stops it.
    pub fn register(
        self: &Arc<Self>,
        subscription: &Subscription,
        member: Arc<M>,
    ) -> crate::SubscriptionHandle {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(
            id,
            Registered {
                group: subscription.group().to_owned(),
                filter: subscription.filter().canonical(),
                member,
            },
        );
        let members = Arc::clone(self);
        crate::SubscriptionHandle::new(subscription.group(), move || async move {
            let registered = members.lock().remove(&id);
            if let Some(r) = registered {
                r.member.stop(None).await;
            }
        })
    }

    /// Refuses new work, stops every member within `timeout` and reports.
    pub async fn shutdown(&self, timeout: Duration) -> crate::ShutdownReport {
        self.closed.store(true, Ordering::Release);
        self.shutdown.cancel();
        let members: Vec<Arc<M>> = self.lock().drain().map(|(_, r)| r.member).collect();
        let deadline = tokio::time::Instant::now() + timeout;
        let mut abandoned = 0;
        for member in members {
            abandoned += member.stop(Some(deadline)).await;
        }
        if abandoned > 0 {
            tracing::warn!(
                bus = self.bus,
                abandoned,
                ?timeout,
                "handlers still running at shutdown were aborted; their messages are redelivered"
            );
        }
        crate::ShutdownReport {
            drained: abandoned == 0,
            abandoned,
        }
    }
}

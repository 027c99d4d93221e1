//! A lane's pull requests. All of them answer on one standing inbox, so
//! however many are out, what they deliver arrives in the order the
//! server sent it (the server shares a burst among the requests waiting,
//! in turn: two inboxes would each hold every other message). So a lane
//! may have several requests out (as many as the reader's read-ahead
//! calls for), and the server never waits a round trip for the member to
//! ask again; and no pull subscribes and unsubscribes an inbox of its
//! own.
//!
//! Each message owed holds a prefetch slot. The server says what an
//! ended request still owed (`Nats-Pending-Messages` on its 408 or 409);
//! a request it fills ends without a word, its messages having taken
//! their slots.

use std::time::Duration;

use async_nats::{Message, StatusCode, Subject};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

/// How long after the last request's expiry the lane still waits to hear
/// what it owed (a reconnect loses the answer) before it counts nothing
/// owed.
pub(super) const GRACE: Duration = Duration::from_secs(1);

/// The most one request asks for while the handlers are slow (the
/// read-ahead's floor; a deep read-ahead asks in larger requests). A
/// member may hold more (its prefetch) in several requests; but a request
/// takes what the server has for it before the next member's request
/// gets anything, so one request of a whole prefetch would take a burst
/// from members that just asked.
pub(super) const AT_MOST: usize = 32;

/// The header on a request's end: how many of its messages it did not deliver.
const PENDING: &str = "Nats-Pending-Messages";

/// One lane's pull requests on its standing inbox.
pub(super) struct LanePull {
    /// Where a pull request goes: `$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>`.
    next: Subject,
    /// Where every request's messages come.
    inbox: Subject,
    /// A slot for each message the requests out may still deliver.
    owed: Vec<OwnedSemaphorePermit>,
    /// When the last request out has ended for sure.
    ends: Option<Instant>,
    /// Whether a message came since a request last ended.
    delivered: bool,
    /// The last request that ended brought nothing, and nothing came since.
    quiet: bool,
    /// A request ended without saying what it owed: no request until `ends`.
    unsure: bool,
}

/// What came on a lane's inbox.
pub(super) enum Inbound {
    /// A message, with its slot (none if the lane's count was reset).
    Message(Message, Option<OwnedSemaphorePermit>),
    /// A request ended (the lane is [`quiet`](LanePull::quiet) if
    /// nothing came since the one before).
    Ended,
    /// Nothing to act on (an idle heartbeat).
    Nothing,
}

impl LanePull {
    /// A lane pulling from `stream`'s consumer `consumer` into `inbox`.
    pub(super) fn new(stream: &str, consumer: &str, inbox: Subject) -> Self {
        LanePull {
            next: format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}").into(),
            inbox,
            owed: Vec::new(),
            ends: None,
            delivered: false,
            quiet: false,
            unsure: false,
        }
    }

    /// Whether the lane may ask for more now: not while its count is
    /// unsure, nor while, quiet, its one-message request is still out.
    /// (How much a member asks for is the reader's read-ahead.)
    pub(super) fn may_ask(&self) -> bool {
        !(self.unsure || (self.quiet && self.pulling()))
    }

    /// Whether the last request that ended brought nothing, and nothing
    /// came since: the lane gets one slot next.
    pub(super) fn quiet(&self) -> bool {
        self.quiet
    }

    /// How many messages the requests out may still deliver.
    pub(super) fn owed(&self) -> usize {
        self.owed.len()
    }

    /// Whether a request is still out.
    pub(super) fn pulling(&self) -> bool {
        !self.owed.is_empty() || self.unsure
    }

    /// When the requests out have ended for sure, if any is out.
    pub(super) fn ends(&self) -> Option<Instant> {
        self.ends.filter(|_| self.pulling())
    }

    /// Asks for one message per slot, waiting up to `expires` for them.
    pub(super) async fn request(
        &mut self,
        nats: &async_nats::Client,
        slots: Vec<OwnedSemaphorePermit>,
        expires: Duration,
    ) -> Result<(), async_nats::PublishError> {
        let body = format!(
            r#"{{"batch":{},"expires":{}}}"#,
            slots.len(),
            expires.as_nanos()
        );
        nats.publish_with_reply(self.next.clone(), self.inbox.clone(), body.into())
            .await?;
        self.owed.extend(slots);
        self.ends = Some(Instant::now() + expires + GRACE);
        Ok(())
    }

    /// Reads what came on the inbox.
    pub(super) fn on(&mut self, message: Message) -> Inbound {
        match message.status {
            None | Some(StatusCode::OK) => {
                self.delivered = true;
                self.quiet = false;
                let slot = self.owed.pop();
                Inbound::Message(message, slot)
            }
            Some(StatusCode::IDLE_HEARTBEAT) => Inbound::Nothing,
            Some(status) => {
                match not_delivered(&message) {
                    Some(n) => self.owed.truncate(self.owed.len().saturating_sub(n)),
                    None => {
                        // A request refused as it came (it delivered
                        // nothing), or an error: its share is unknown.
                        tracing::warn!(%status, description = ?message.description, "a nats pull request ended without saying what it owed; the lane waits for its requests to expire");
                        self.unsure = true;
                    }
                }
                self.quiet = !std::mem::take(&mut self.delivered);
                Inbound::Ended
            }
        }
    }

    /// Past `ends`, a request out can deliver nothing more: what is still
    /// counted as owed was lost with its answer, and its slots go back.
    pub(super) fn expire(&mut self, now: Instant) {
        if self.ends().is_some_and(|ends| ends <= now) {
            self.owed.clear();
            self.unsure = false;
        }
    }
}

/// What an ended request says it did not deliver.
fn not_delivered(message: &Message) -> Option<usize> {
    message
        .headers
        .as_ref()?
        .get(PENDING)?
        .as_str()
        .trim()
        .parse()
        .ok()
}

/// The stream sequence in a JetStream reply subject, either form:
/// `$JS.ACK.<stream>.<consumer>.<delivered>.<seq>.…` (9 tokens) or with a
/// domain and an account hash after `$JS.ACK.` (11 or more).
pub(super) fn stream_sequence(reply: &str) -> Option<u64> {
    let rest = reply.strip_prefix("$JS.ACK.")?;
    // One pass over the bytes, noting where the first dots are (every
    // message's reply goes through here).
    let mut dots = [0usize; 6];
    let mut count = 0;
    for (i, b) in rest.bytes().enumerate() {
        if b == b'.' {
            if let Some(at) = dots.get_mut(count) {
                *at = i;
            }
            count += 1;
        }
    }
    // The sequence is the 4th token of 7, or the 6th of 9 or more.
    let (start, end) = match count + 1 {
        7 => (dots[2] + 1, dots[3]),
        9.. => (dots[4] + 1, dots[5]),
        _ => return None,
    };
    rest.get(start..end)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16, pending: Option<&str>) -> Message {
        let headers = pending.map(|p| {
            let mut h = async_nats::HeaderMap::new();
            h.insert(PENDING, p);
            h
        });
        Message {
            subject: "_INBOX.x".into(),
            reply: None,
            payload: bytes::Bytes::new(),
            headers,
            status: Some(StatusCode::from_u16(code).expect("status")),
            description: None,
            length: 0,
        }
    }

    fn message() -> Message {
        Message {
            subject: "es.events".into(),
            reply: Some("$JS.ACK.s.c.1.7.7.1796530278193755696.0".into()),
            payload: bytes::Bytes::from_static(b"{}"),
            headers: None,
            status: None,
            description: None,
            length: 2,
        }
    }

    fn slots(n: usize) -> Vec<OwnedSemaphorePermit> {
        let semaphore = std::sync::Arc::new(tokio::sync::Semaphore::new(n));
        (0..n)
            .map(|_| semaphore.clone().try_acquire_owned().expect("slot"))
            .collect()
    }

    fn lane() -> LanePull {
        LanePull::new("s", "c", "_INBOX.x".into())
    }

    /// As a request would, without a server.
    fn asked(lane: &mut LanePull, n: usize) {
        lane.owed.extend(slots(n));
        lane.ends = Some(Instant::now() + Duration::from_secs(5));
    }

    #[test]
    fn a_quiet_lane_asks_again_only_when_its_request_ended() {
        let mut lane = lane();
        assert!(lane.may_ask(), "a new lane asks");
        asked(&mut lane, 4);
        assert!(lane.may_ask(), "a busy lane asks while requests are out");
        let mut one = self::lane();
        asked(&mut one, 1);
        one.on(status(408, Some("1")));
        assert!(one.quiet());
        assert!(one.may_ask(), "quiet, with no request out");
        asked(&mut one, 1);
        assert!(!one.may_ask(), "a quiet lane's one request is out");
        one.on(status(408, Some("1")));
        assert!(one.may_ask());
        asked(&mut one, 1);
        one.on(message());
        assert!(!one.quiet(), "a message ends the quiet");
        assert!(one.may_ask());
    }

    #[test]
    fn an_ended_request_gives_back_the_slots_it_did_not_fill() {
        let mut lane = lane();
        asked(&mut lane, 5);
        asked(&mut lane, 3);
        lane.on(message());
        lane.on(message());
        // The server shared two messages between them; the first ends
        // owing 4, the second owing 2.
        assert!(matches!(lane.on(status(408, Some("4"))), Inbound::Ended));
        assert!(!lane.quiet(), "two messages came before it ended");
        assert_eq!(lane.owed.len(), 2);
        assert!(lane.pulling());
        assert!(matches!(lane.on(status(408, Some("2"))), Inbound::Ended));
        assert!(lane.quiet(), "nothing came since the first ended");
        assert!(!lane.pulling());
        assert!(lane.ends().is_none());
        // Heartbeats change nothing.
        asked(&mut lane, 2);
        assert!(matches!(lane.on(status(100, None)), Inbound::Nothing));
        assert_eq!(lane.owed.len(), 2);
    }

    #[test]
    fn an_end_that_does_not_say_what_it_owed_holds_the_lane_until_expiry() {
        let mut lane = lane();
        asked(&mut lane, 2);
        lane.on(status(409, None));
        assert!(!lane.may_ask());
        assert!(lane.pulling());
        let ends = lane.ends().expect("a request is out");
        lane.expire(ends - Duration::from_millis(1));
        assert!(lane.pulling(), "not before it surely ended");
        lane.expire(ends);
        assert!(!lane.pulling());
        assert!(lane.owed.is_empty(), "its slots went back");
        assert!(lane.may_ask());
    }

    #[test]
    fn the_stream_sequence_is_read_from_either_form_of_reply() {
        assert_eq!(
            stream_sequence("$JS.ACK.orders.g.1.42.40.1796530278193755696.0"),
            Some(42)
        );
        assert_eq!(
            stream_sequence("$JS.ACK.hub.ACCHASH.orders.g.2.42.40.1796530278193755696.3.rand"),
            Some(42)
        );
        assert_eq!(
            stream_sequence("$JS.ACK._.ACCHASH.orders.g.2.43.40.1796530278193755696.3"),
            Some(43)
        );
        assert_eq!(stream_sequence("$JS.ACK.orders.g.1"), None);
        assert_eq!(stream_sequence("_INBOX.abc"), None);
    }
}

//! One member of a consumer group: its own connection consuming the
//! group's queue (basic.qos = prefetch), the workers, and reconnection.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use eventsource_core::driver::{
    triage, Delivery, Intake, KeyedQueue, Member, MemberTasks, Outcome, Settle,
};
use eventsource_core::{Failure, Result, Subscription};
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
};
use lapin::types::FieldTable;
use lapin::Acker;
use tokio_util::sync::CancellationToken;

use crate::client::Client;
use crate::dlq::{dead_letter_message, LetterBody};
use crate::topology::{amqp_err, declare_group, join_group, short, Session, BACKEND};
use crate::wire;

/// What a worker needs to settle a message.
pub(crate) struct Token {
    acker: Acker,
    routing_key: String,
}

/// One subscription's consumer of its group's queue: its consume loop
/// (reconnecting) and its workers.
pub(crate) struct GroupConsumer {
    client: Arc<Client>,
    subscription: Subscription,
    queue: KeyedQueue<Token>,
    /// The consuming connection; kept open after `stop` until the workers
    /// have acked, then closed (unacked messages go back to the queue).
    session: tokio::sync::Mutex<Option<Session>>,
    tasks: MemberTasks,
}

impl GroupConsumer {
    /// Declares the group's topology (so a bad filter or an unreachable
    /// broker fails here) and starts consuming.
    pub(crate) async fn start(
        client: Arc<Client>,
        subscription: Subscription,
        stop: CancellationToken,
    ) -> Result<Arc<Self>> {
        let session = Self::open(&client, &subscription).await?;
        let member = Arc::new(GroupConsumer {
            queue: KeyedQueue::new(usize::from(client.config.prefetch)),
            session: tokio::sync::Mutex::new(None),
            tasks: MemberTasks::new(stop),
            client,
            subscription,
        });
        member
            .tasks
            .helper(Arc::clone(&member).consume_loop(session));
        let n = member.subscription.concurrency();
        member.tasks.spawn_workers(
            BACKEND,
            member.client.config.queue(member.subscription.group()),
            &member,
            n,
            |m| (&m.queue, &m.subscription, &m.client.stats),
        );
        Ok(member)
    }

    /// Where a message came from, for its dead letter: the group's queue
    /// and the routing key it arrived with.
    fn source(&self, routing_key: &str) -> String {
        format!("{} ({routing_key})", self.client.config.queue(self.group()))
    }

    pub(crate) fn group(&self) -> &str {
        self.subscription.group()
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.queue.in_flight()
    }

    async fn open(client: &Client, subscription: &Subscription) -> Result<Session> {
        let mut session = Session::open(&client.config, false).await?;
        session.presence = Some(
            join_group(
                &session.channel,
                &client.config,
                subscription.group(),
                subscription.filter(),
            )
            .await?,
        );
        declare_group(
            &session.channel,
            &client.config,
            subscription.group(),
            subscription.filter(),
        )
        .await?;
        session
            .channel
            .basic_qos(client.config.prefetch, BasicQosOptions::default())
            .await
            .map_err(|e| amqp_err("setting prefetch (basic.qos)", e))?;
        Ok(session)
    }

    /// Consumes until stopped; on a lost connection, reconnects with
    /// backoff, declares the topology again and resumes.
    async fn consume_loop(self: Arc<Self>, first: Session) {
        let mut next_session = Some(first);
        let mut backoff = Duration::from_millis(200);
        loop {
            let session = match next_session.take() {
                Some(s) => s,
                None => match Self::open(&self.client, &self.subscription).await {
                    Ok(s) => {
                        tracing::info!(group = self.group(), "rabbitmq consumer reconnected");
                        backoff = Duration::from_millis(200);
                        s
                    }
                    Err(e) => {
                        tracing::warn!(group = self.group(), error = %e, ?backoff, "rabbitmq reconnect failed");
                        tokio::select! {
                            () = self.tasks.token().cancelled() => return,
                            () = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        continue;
                    }
                },
            };
            let channel = session.channel.clone();
            if let Some(old) = self.session.lock().await.replace(session) {
                old.close().await;
            }
            match self.consume(&channel).await {
                Ok(()) => return, // stopped
                Err(e) => {
                    tracing::warn!(group = self.group(), error = %e, "rabbitmq consumer lost its channel");
                    // What the dead channel delivered goes back to the queue on
                    // the broker; the local copies must not be handled twice.
                    let dropped = self.queue.drain().len();
                    if dropped > 0 {
                        tracing::debug!(dropped, "dropped local copies of requeued messages");
                    }
                }
            }
        }
    }

    async fn consume(&self, channel: &lapin::Channel) -> Result<()> {
        let queue = self.client.config.queue(self.group());
        let mut consumer = channel
            .basic_consume(
                short("queue", &queue)?,
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| amqp_err(format!("consuming `{queue}`"), e))?;
        loop {
            tokio::select! {
                () = self.tasks.token().cancelled() => {
                    let _ = channel.basic_cancel(consumer.tag(), BasicCancelOptions::default()).await;
                    return Ok(());
                }
                next = consumer.next() => match next {
                    Some(Ok(delivery)) => self.accept(delivery).await,
                    Some(Err(e)) => return Err(amqp_err(format!("consuming `{queue}`"), e)),
                    None => return Err(eventsource_core::Error::backend(BACKEND, format!("consuming `{queue}`"), "the broker cancelled the consumer")),
                },
            }
        }
    }

    async fn accept(&self, delivery: lapin::message::Delivery) {
        let routing_key = delivery.routing_key.as_str().to_owned();
        let decoded = wire::decode(&delivery.properties, &delivery.data);
        let source = || self.source(&routing_key);
        match triage(BACKEND, &self.subscription, decoded, source) {
            Intake::Handle(envelope) => {
                let token = Token {
                    acker: delivery.acker,
                    routing_key,
                };
                self.queue
                    .push_now(Delivery::new(Arc::new(envelope), token));
            }
            Intake::Skip => {
                let _ = delivery.acker.ack(BasicAckOptions::default()).await;
            }
            Intake::DeadLetter(failure) => {
                let body = LetterBody::Raw {
                    properties: delivery.properties.clone(),
                    body: delivery.data.clone(),
                };
                if self.dead_letter(&body, &failure).await {
                    self.client.stats.dead_lettered(self.subscription.group());
                    let _ = delivery.acker.ack(BasicAckOptions::default()).await;
                } else {
                    requeue(&delivery.acker).await;
                }
            }
        }
    }

    /// Publishes a dead letter to the group's DLQ (confirmed); `true` on success.
    async fn dead_letter(&self, body: &LetterBody, failure: &Failure) -> bool {
        let config = &self.client.config;
        let (dlq, redacted) = (config.dlq(self.group()), config.redacted_url());
        let message = dead_letter_message(config, body, failure, &dlq);
        let target = self.client.target(&dlq, &redacted);
        match self
            .client
            .publish_confirmed(&target, std::slice::from_ref(&message))
            .await
        {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, "could not dead-letter; the message goes back to the queue");
                false
            }
        }
    }
}

/// Gives a message back to the queue (after a dead letter could not be written).
async fn requeue(acker: &Acker) {
    let _ = acker
        .nack(BasicNackOptions {
            requeue: true,
            ..Default::default()
        })
        .await;
}

#[async_trait]
impl Member for GroupConsumer {
    /// Stops consuming and waits for the workers (until `deadline`, if
    /// any, then aborts them); closes the connection. Returns how many
    /// workers were aborted.
    async fn stop(&self, deadline: Option<tokio::time::Instant>) -> usize {
        let abandoned = self.tasks.stop(deadline).await;
        if let Some(session) = self.session.lock().await.take() {
            session.close().await;
        }
        abandoned
    }
}

#[async_trait]
impl Settle<Token> for GroupConsumer {
    async fn settle(&self, delivery: Delivery<Token>, outcome: Outcome) {
        let Delivery {
            envelope, token, ..
        } = delivery;
        if let Outcome::DeadLetter(failure) = outcome {
            let failure = failure.from_source(self.source(&token.routing_key));
            let body = LetterBody::Event((*envelope).clone());
            if !self.dead_letter(&body, &failure).await {
                requeue(&token.acker).await;
                return;
            }
        }
        if let Err(e) = token.acker.ack(BasicAckOptions::default()).await {
            // The channel is gone: the broker redelivers the message.
            tracing::warn!(group = self.group(), error = %e, "ack failed; the message will be redelivered");
        }
    }
}

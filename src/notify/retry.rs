//! [`RetryPolicy`]: capped, jittered exponential backoff around one send, honouring
//! `Retry-After`, and counting the tries that went unanswered (possible duplicates). The same
//! loop serves message channels and digest channels.

use std::time::Duration;

use futures::future::BoxFuture;

use super::{Digest, DigestChannel, Error, Message, MessageChannel, Receipt};

/// Capped, jittered exponential backoff.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Tries per send, the first included.
    pub attempts: u32,
    /// Backoff before the second try (doubling each time, with full jitter).
    pub base: Duration,
    /// Longest backoff.
    pub cap: Duration,
    /// A `Retry-After` longer than this ends the run's tries; the next run retries instead.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 4,
            base: Duration::from_millis(500),
            cap: Duration::from_secs(20),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The wait before try `attempt + 1` (`attempt` from 1): `Retry-After` when given, else a
    /// random duration up to `min(cap, base * 2^(attempt-1))`.
    pub fn backoff(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(wait) = retry_after {
            return wait;
        }
        let ceiling = self
            .base
            .saturating_mul(1u32 << (attempt.saturating_sub(1)).min(20))
            .min(self.cap);
        let jitter = rand::random_range(0.0..=1.0);
        ceiling.mul_f64(jitter)
    }

    /// Sends `message` through `channel`, retrying transient failures; the last error when all
    /// tries fail.
    pub async fn send(
        &self,
        channel: &dyn MessageChannel,
        message: &Message,
    ) -> Result<Receipt, Error> {
        self.send_counted(channel, message).await.0
    }

    /// [`Self::send`], also counting the tries that got no answer ([`Error::is_unconfirmed`]:
    /// the provider may have accepted them) and were sent again: each may have gone out twice.
    pub async fn send_counted(
        &self,
        channel: &dyn MessageChannel,
        message: &Message,
    ) -> (Result<Receipt, Error>, u64) {
        self.retry(|| channel.send(message)).await
    }

    /// Sends a digest through `channel`, retrying and counting like [`Self::send_counted`].
    pub async fn send_digest(
        &self,
        channel: &dyn DigestChannel,
        digest: &Digest,
    ) -> (Result<Receipt, Error>, u64) {
        self.retry(|| channel.send(digest)).await
    }

    async fn retry<'a>(
        &self,
        send: impl Fn() -> BoxFuture<'a, Result<Receipt, Error>>,
    ) -> (Result<Receipt, Error>, u64) {
        let mut attempt = 1;
        let mut unconfirmed = 0;
        loop {
            match send().await {
                Ok(receipt) => return (Ok(receipt), unconfirmed),
                Err(err) if !err.is_transient() || attempt >= self.attempts => {
                    return (Err(err), unconfirmed);
                }
                Err(err) => {
                    let wait = self.backoff(attempt, err.retry_after());
                    if wait > self.max_retry_after {
                        return (Err(err), unconfirmed);
                    }
                    if err.is_unconfirmed() {
                        unconfirmed += 1;
                    }
                    tracing::debug!(attempt, wait_ms = wait.as_millis() as u64, error = %err, "retrying a send");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::NoticeKind;

    #[test]
    fn backoff_is_capped_jittered_and_honours_retry_after() {
        let policy = RetryPolicy {
            attempts: 10,
            base: Duration::from_millis(100),
            cap: Duration::from_millis(1000),
            max_retry_after: Duration::from_secs(60),
        };
        for attempt in 1..=12 {
            let ceiling = Duration::from_millis((100u64 << (attempt - 1)).min(1000));
            let waits: Vec<Duration> = (0..50).map(|_| policy.backoff(attempt, None)).collect();
            assert!(waits.iter().all(|w| *w <= ceiling), "attempt {attempt}");
            assert!(waits.iter().any(|w| *w != waits[0]), "jittered");
        }
        assert_eq!(
            policy.backoff(1, Some(Duration::from_secs(2))),
            Duration::from_secs(2)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_after_past_the_limit_gives_up_instead_of_waiting() {
        let policy = RetryPolicy {
            max_retry_after: Duration::from_secs(60),
            ..RetryPolicy::default()
        };
        let message = Message::for_test(1, NoticeKind::Reminder);
        let busy = |secs: u64| Error::from_status(429, Some(Duration::from_secs(secs)), "");
        // Asked to wait 61 s, one past the limit: the send fails now, with the 429, after one
        // try; the paused clock shows no wait.
        let channel = Scripted(std::sync::Mutex::new(vec![
            Err(busy(61)),
            Ok(Receipt::default()),
        ]));
        let started = tokio::time::Instant::now();
        let (result, _) = policy.send_counted(&channel, &message).await;
        assert_eq!(result.unwrap_err().reason(), busy(61).reason());
        assert_eq!(
            channel.0.lock().unwrap().len(),
            1,
            "one try, the second never made"
        );
        assert_eq!(started.elapsed(), Duration::ZERO);
        // At the limit it waits, then sends again.
        let channel = Scripted(std::sync::Mutex::new(vec![
            Err(busy(60)),
            Ok(Receipt::default()),
        ]));
        let started = tokio::time::Instant::now();
        let (result, _) = policy.send_counted(&channel, &message).await;
        assert!(result.is_ok());
        assert_eq!(started.elapsed(), Duration::from_secs(60));
    }

    /// Answers from a script, one entry per try, through either kind of channel.
    struct Scripted(std::sync::Mutex<Vec<Result<Receipt, Error>>>);

    impl Scripted {
        fn next(&self) -> BoxFuture<'_, Result<Receipt, Error>> {
            let next = self.0.lock().unwrap().remove(0);
            Box::pin(async move { next })
        }
    }

    impl MessageChannel for Scripted {
        fn send<'a>(&'a self, _: &'a Message) -> BoxFuture<'a, Result<Receipt, Error>> {
            self.next()
        }
    }

    impl DigestChannel for Scripted {
        fn send<'a>(&'a self, _: &'a Digest) -> BoxFuture<'a, Result<Receipt, Error>> {
            self.next()
        }
    }

    #[tokio::test]
    async fn tries_without_an_answer_that_are_sent_again_are_counted() {
        let policy = RetryPolicy {
            base: Duration::from_millis(1),
            ..RetryPolicy::default()
        };
        let unavailable = Error::from_status(503, None, "");
        let message = Message::for_test(1, NoticeKind::Reminder);
        let digest = Digest::from_messages(std::slice::from_ref(&message));
        // A message and a digest retry, and count, alike.
        for through_digest in [false, true] {
            let send = async |tries: Vec<Result<Receipt, Error>>| {
                let channel = Scripted(std::sync::Mutex::new(tries));
                if through_digest {
                    policy.send_digest(&channel, &digest).await
                } else {
                    policy.send_counted(&channel, &message).await
                }
            };
            // A timeout and a connection lost after sending, each possibly accepted, then a
            // success: up to two duplicates.
            assert_eq!(
                send(vec![
                    Err(Error::Timeout),
                    Err(unavailable.clone()),
                    Err(Error::NoAnswer("connection closed".into())),
                    Ok(Receipt::default()),
                ])
                .await,
                (Ok(Receipt::default()), 2)
            );
            // A connection that could not be made carried nothing.
            assert_eq!(
                send(vec![
                    Err(Error::Network("refused".into())),
                    Ok(Receipt::default()),
                ])
                .await,
                (Ok(Receipt::default()), 0)
            );
            // A last try that times out is not sent again here (the next run counts it).
            assert_eq!(
                send(vec![
                    Err(unavailable.clone()),
                    Err(unavailable.clone()),
                    Err(unavailable.clone()),
                    Err(Error::Timeout),
                ])
                .await,
                (Err(Error::Timeout), 0)
            );
            // Answers that say no are no duplicates.
            assert_eq!(
                send(vec![Err(unavailable.clone()), Ok(Receipt::default())]).await,
                (Ok(Receipt::default()), 0)
            );
        }
        for unanswered in [Error::Timeout, Error::NoAnswer(String::new())] {
            assert!(unanswered.is_unconfirmed(), "{unanswered:?}");
        }
    }
}

//! Leader election through a `coordination.k8s.io/v1` Lease, so only one replica reconciles.
//! The decision is a pure function of the Lease and the clock; the I/O around it uses the
//! Lease's resourceVersion, so two replicas racing for it cannot both win.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, PostParams};

/// How long a Lease is valid without renewal.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often the leader renews (and a follower retries).
pub const RENEW_INTERVAL: Duration = Duration::from_secs(5);

/// What a replica should do with the Lease it sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Nobody holds it (or the holder's time ran out): take it.
    Acquire,
    /// We hold it: renew.
    Renew,
    /// Someone else holds it and is alive: wait.
    Wait,
}

/// Decides from the current Lease (`None`: it does not exist yet) at `now`.
pub fn decide(lease: Option<&Lease>, identity: &str, now: jiff::Timestamp) -> Decision {
    let Some(spec) = lease.and_then(|l| l.spec.as_ref()) else {
        return Decision::Acquire;
    };
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    if holder == identity {
        return Decision::Renew;
    }
    if holder.is_empty() {
        return Decision::Acquire;
    }
    let duration = i64::from(
        spec.lease_duration_seconds
            .unwrap_or(LEASE_DURATION.as_secs() as i32),
    );
    let renewed = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map(|t| t.0);
    match renewed {
        Some(renewed) if renewed.as_second() + duration > now.as_second() => Decision::Wait,
        _ => Decision::Acquire,
    }
}

/// One replica's view of the Lease.
#[derive(Clone)]
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
}

impl LeaderElector {
    /// Elects among replicas sharing the Lease `namespace/name`; `identity` names this one.
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
        }
    }

    /// Takes or renews the Lease when it may; `Ok(true)` while this replica leads.
    pub async fn try_lead(&self) -> Result<bool, kube::Error> {
        let current = self.api.get_opt(&self.name).await?;
        let now = jiff::Timestamp::now();
        let decision = decide(current.as_ref(), &self.identity, now);
        if decision == Decision::Wait {
            return Ok(false);
        }
        let previous = current
            .as_ref()
            .and_then(|l| l.spec.clone())
            .unwrap_or_default();
        let taking_over = decision == Decision::Acquire;
        let spec = LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
            acquire_time: if taking_over {
                Some(MicroTime(now))
            } else {
                previous.acquire_time.clone()
            },
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(
                previous.lease_transitions.unwrap_or(0)
                    + i32::from(taking_over && current.is_some()),
            ),
            ..previous
        };
        let result = match current {
            Some(mut lease) => {
                lease.spec = Some(spec);
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
            }
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..Default::default()
                    },
                    spec: Some(spec),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
        };
        match result {
            Ok(_) => Ok(true),
            // Another replica wrote first.
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease up so another replica can take over at once (on shutdown).
    pub async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        self.api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>, renewed_at: i64) -> Lease {
        Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_owned),
                lease_duration_seconds: Some(15),
                renew_time: Some(MicroTime(jiff::Timestamp::from_second(renewed_at).unwrap())),
                ..Default::default()
            }),
        }
    }

    fn at(second: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(second).unwrap()
    }

    #[test]
    fn decisions() {
        assert_eq!(decide(None, "me", at(1_000)), Decision::Acquire);
        assert_eq!(
            decide(Some(&lease(Some("me"), 990)), "me", at(1_000)),
            Decision::Renew
        );
        assert_eq!(
            decide(Some(&lease(Some("other"), 990)), "me", at(1_000)),
            Decision::Wait
        );
        assert_eq!(
            decide(Some(&lease(Some("other"), 985)), "me", at(1_000)),
            Decision::Acquire,
            "expired at 1000"
        );
        assert_eq!(
            decide(Some(&lease(Some("other"), 986)), "me", at(1_000)),
            Decision::Wait,
            "one second left"
        );
        assert_eq!(
            decide(Some(&lease(None, 999)), "me", at(1_000)),
            Decision::Acquire,
            "released"
        );
        assert_eq!(
            decide(Some(&lease(Some(""), 999)), "me", at(1_000)),
            Decision::Acquire,
            "released"
        );
    }
}

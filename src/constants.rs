//! Every string the cluster sees from Signet, in one place: the API group, names, labels,
//! annotations, condition types and reasons, and the environment variables the workers read.

/// API group of Signet's custom resources.
pub const API_GROUP: &str = "signet.dev";
/// The served and stored version of `SignaturePolicy`.
pub const API_VERSION: &str = "v1alpha1";
/// `apiVersion` as written in manifests.
pub const API_GROUP_VERSION: &str = "signet.dev/v1alpha1";
/// Kind of the policy resource.
pub const POLICY_KIND: &str = "SignaturePolicy";
/// Name of the CustomResourceDefinition (`<plural>.<group>`).
pub const POLICY_CRD_NAME: &str = "signaturepolicies.signet.dev";

/// Label every object Signet creates carries.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Value of [`LABEL_MANAGED_BY`].
pub const MANAGED_BY: &str = "signet";
/// Label naming the policy an object belongs to (pruning selects on it).
pub const LABEL_POLICY: &str = "signet.dev/policy";

/// Condition type: the policy was reconciled into its CronJobs.
pub const CONDITION_READY: &str = "Ready";
/// Condition type: the policy is suspended.
pub const CONDITION_SUSPENDED: &str = "Suspended";
/// Condition type: a section has had no successful run for too long.
pub const CONDITION_STALE: &str = "Stale";

/// Prefix of the environment variable that carries a secret value into a worker:
/// `SIGNET_SECRET_<NAME>_<KEY>`.
pub const SECRET_ENV_PREFIX: &str = "SIGNET_SECRET_";

/// The SendGrid endpoint used when a channel does not name one.
pub const SENDGRID_DEFAULT_ENDPOINT: &str = "https://api.sendgrid.com/v3/mail/send";

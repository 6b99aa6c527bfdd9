//! Channel secrets, read only from the environment variables that `SecretKeyRef::env_var()`
//! names (the chart maps the Secrets there); tests pass their own lookup.

use super::Error;
use crate::crd::SecretKeyRef;

/// Reads an environment variable; tests pass their own lookup instead of the process env.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The value of a secret from its environment variable.
pub fn secret(env: EnvLookup<'_>, secret: &SecretKeyRef, field: &str) -> Result<String, Error> {
    let var = secret.env_var();
    env(&var).filter(|v| !v.is_empty()).ok_or_else(|| {
        Error::Config(format!(
            "{field}: environment variable {var} (Secret {:?} key {:?}) is not set",
            secret.name, secret.key
        ))
    })
}

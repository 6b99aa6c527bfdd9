//! Property-based tests of everything that parses text or JSON a person wrote: durations, cron
//! schedules, time zones, clock times, mailboxes, templates, the policy deserializer with its
//! admission checks, and `SIGNET_POLICY`. Whatever the input, the result is `Ok` or an error that
//! says what is wrong and where; never a panic or a hang.

use std::sync::{LazyLock, mpsc};
use std::time::Duration as StdDuration;

use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};
use proptest::prelude::*;
use serde_json::{Map, Value};
use signet::admission::Admission;
use signet::commands::worker::{PolicyArgs, load_policy};
use signet::crd::{SignaturePolicy, SignaturePolicySpec};
use signet::duration::Duration;
use signet::policy::validate;
use signet::schedule::{Schedule, ScheduleError};

mod cron;
use cron::{cron_like, valid_schedule};
mod cron_oracle;
mod template_sources;
use template_sources::template_like;

/// Compiled once: compiling the schema and its CEL rules is the slow part of admission.
static ADMISSION: LazyLock<Admission> = LazyLock::new(Admission::new);

/// `examples/full.yaml`, which sets every field, as the admission input.
static FULL: LazyLock<Value> = LazyLock::new(|| {
    let text = include_str!("../../examples/full.yaml");
    serde_saphyr::from_str(text).expect("examples/full.yaml is YAML")
});

/// The spec of `examples/full.yaml`, decoded.
fn full_spec() -> SignaturePolicySpec {
    serde_json::from_value::<SignaturePolicy>(FULL.clone())
        .expect("examples/full.yaml decodes")
        .spec
}

/// Runs `work` on another thread and fails if it takes longer than `limit`: a liveness check
/// with a bound far above any sane run time, not a performance assertion.
fn within<T: Send + 'static>(limit: StdDuration, work: impl FnOnce() -> T + Send + 'static) -> T {
    let (send, receive) = mpsc::channel();
    std::thread::spawn(move || send.send(work()));
    receive
        .recv_timeout(limit)
        .unwrap_or_else(|_| panic!("did not finish within {limit:?}"))
}

// ---------------------------------------------------------------------------------------------
// Durations

/// One `<number><unit>` part; numbers of one to six digits, leading zeros allowed.
fn duration_part(unit: char) -> impl Strategy<Value = Option<String>> {
    proptest::option::of("[0-9]{1,6}".prop_map(move |n| format!("{n}{unit}")))
}

/// Strings of the duration grammar: units largest first, each at most once (may be zero or empty).
fn duration_grammar() -> impl Strategy<Value = String> {
    ['w', 'd', 'h', 'm', 's']
        .map(duration_part)
        .prop_map(|parts| parts.into_iter().flatten().collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn duration_parser_never_panics_and_round_trips(
        text in prop_oneof![any::<String>(), "[0-9wdhms+ .-]{0,12}", duration_grammar()],
    ) {
        match text.parse::<Duration>() {
            Ok(duration) => {
                prop_assert!(duration.as_secs() > 0);
                let canonical = duration.to_string();
                prop_assert_eq!(canonical.parse::<Duration>(), Ok(duration), "{:?} printed as {:?}", text, canonical);
            }
            Err(err) => {
                let message = err.to_string();
                prop_assert!(message.contains(&format!("{text:?}")), "{:?} not named in {:?}", text, message);
            }
        }
    }

    #[test]
    fn durations_of_the_grammar_parse_to_their_value(parts in ['w', 'd', 'h', 'm', 's'].map(duration_part)) {
        let text: String = parts.iter().flatten().cloned().collect();
        let secs: u64 = parts
            .iter()
            .zip([604_800, 86_400, 3_600, 60, 1])
            .filter_map(|(part, unit)| Some(part.as_ref()?.trim_end_matches(char::is_alphabetic).parse::<u64>().ok()? * unit))
            .sum();
        match text.parse::<Duration>() {
            Ok(duration) => {
                prop_assert_eq!(duration.as_secs(), secs);
                prop_assert_eq!(duration.to_string().parse::<Duration>(), Ok(duration));
            }
            // Only the empty string and a sum of zeros are refused.
            Err(err) => prop_assert_eq!(secs, 0, "{:?}: {}", text, err),
        }
    }

    #[test]
    fn every_duration_prints_in_a_form_that_parses(secs in 1u64..=999_999 * (604_800 + 86_400 + 3_600 + 60 + 1)) {
        let duration = Duration::from_secs(secs).expect("positive");
        prop_assert_eq!(duration.to_string().parse::<Duration>(), Ok(duration), "{}", duration);
    }
}

// ---------------------------------------------------------------------------------------------
// Time zones, clock times and mailboxes

/// Errors of `validate` for the full example with `time_zone` as its zone.
fn zone_errors(time_zone: &str) -> Vec<validate::FieldError> {
    let mut spec = full_spec();
    spec.time_zone = time_zone.to_owned();
    validate::validate(&spec).err().unwrap_or_default()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_time_zone_is_accepted_or_named_in_an_error(
        zone in prop_oneof![any::<String>(), "[A-Za-z_/+-]{0,20}", prop::sample::select(vec!["europe/berlin", "UTC", "Etc/GMT+5", "EST5EDT", "Europe/Berlin ", "İstanbul"]).prop_map(str::to_owned)],
    ) {
        let errors = zone_errors(&zone);
        if zone.parse::<chrono_tz::Tz>().is_ok() {
            prop_assert!(errors.is_empty(), "{:?}: {:?}", zone, errors);
        } else {
            prop_assert!(!errors.is_empty());
            let zone_error = errors.iter().find(|e| e.path == "spec.timeZone");
            prop_assert!(zone_error.is_some_and(|e| e.message.contains(&format!("{zone:?} is not a known IANA time zone"))), "{:?}: {:?}", zone, errors);
        }
    }

    #[test]
    fn clock_times_parse_only_as_hh_mm(text in prop_oneof![any::<String>(), "[0-9:+ -]{0,6}", "[+0-9]{2}:[+0-9]{2}"]) {
        if let Some(minutes) = validate::parse_clock(&text) {
            prop_assert!(minutes < 24 * 60);
            prop_assert_eq!(text, format!("{:02}:{:02}", minutes / 60, minutes % 60));
        }
    }

    #[test]
    fn mailboxes_are_accepted_or_refused_with_the_address_named(
        text in prop_oneof![any::<String>(), "[a-z<>@. \",;-]{0,24}", "[a-z]{1,8}@[a-z]{1,8}\\.[a-z]{2,3}"],
    ) {
        if let Err(message) = validate::check_mailbox(&text) {
            prop_assert!(message.starts_with(&format!("{text:?} is not an email address: ")), "{}", message);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The policy deserializer and admission

/// Object keys: the policy's own field names, so generated values reach deep, and any text.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "timeZone", "database", "urlSecretRef", "name", "key", "reminders", "schedule",
            "firstAfter", "every", "maxReminders", "sendWindow", "start", "end", "days", "channels",
            "template", "subject", "text", "timeout", "after", "smtp", "host", "port", "from", "to",
            "sendgrid", "log", "webhook", "jobTemplate", "suspend", "selector", "expiryWarning",
            "escalation", "before",
        ]).prop_map(str::to_owned),
        1 => any::<String>(),
    ]
}

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        any::<String>().prop_map(Value::String),
        prop::sample::select(vec![
            "",
            "0s",
            "14d",
            "08:00",
            "Mon",
            "*/5 * * * *",
            "{{ x",
            "a@b.c",
            "-1"
        ])
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec((key(), inner), 0..6)
                .prop_map(|entries| Value::Object(entries.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// JSON pointers of every value under `spec` in `value`.
fn pointers(value: &Value, at: String, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => map.iter().for_each(|(k, v)| {
            pointers(
                v,
                format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                out,
            )
        }),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .for_each(|(i, v)| pointers(v, format!("{at}/{i}"), out)),
        _ => {}
    }
    out.push(at);
}

static SPEC_POINTERS: LazyLock<Vec<String>> = LazyLock::new(|| {
    let mut out = Vec::new();
    pointers(&FULL["spec"], "/spec".to_owned(), &mut out);
    out
});

/// The pointers of [`SPEC_POINTERS`] that hold a string, number or boolean.
static SPEC_LEAVES: LazyLock<Vec<String>> = LazyLock::new(|| {
    let leaves = SPEC_POINTERS.iter().filter(|p| {
        let value = FULL.pointer(p).expect("pointer from the example");
        !value.is_object() && !value.is_array()
    });
    leaves.cloned().collect()
});

/// The note admission adds, without a field, when type errors kept CEL rules from running.
const CEL_SKIPPED: &str = "CEL validation rules were not checked because of the type errors above; correct them to complete validation";

/// Admission of `object`; every refusal must name a field under `spec` (bar the CEL note).
fn assert_refusals_name_spec_fields(
    object: Value,
) -> Result<Vec<validate::FieldError>, TestCaseError> {
    let verdict = ADMISSION.check(object);
    for error in &verdict.errors {
        prop_assert!(
            error.path == "spec"
                || error.path.starts_with("spec.")
                || (error.path.is_empty() && error.message == CEL_SKIPPED),
            "error without a spec field path: {:?}",
            error
        );
        prop_assert!(!error.message.is_empty(), "{:?}", error);
    }
    // The note without a field only ever follows a type error that has one.
    if verdict.errors.iter().any(|e| e.message == CEL_SKIPPED) {
        let typed = verdict
            .errors
            .iter()
            .any(|e| e.message.contains("must be of type"));
        prop_assert!(typed, "{:?}", verdict.errors);
    }
    // Accepted means decoded: the worker and controller act on the policy admission returns.
    if verdict.is_valid() {
        prop_assert!(verdict.policy.is_some());
    }
    Ok(verdict.errors)
}

/// A value of the same JSON type as the example's, so the mutation gets past the schema's type
/// checks to the patterns, CEL rules, decoding and semantic validation.
fn same_type(original: &Value) -> BoxedStrategy<Value> {
    match original {
        Value::String(_) => prop_oneof![
            any::<String>(),
            duration_grammar(),
            valid_schedule(),
            cron_like(),
            template_like(),
            "[a-z<>@. -]{0,16}",
            "[0-9:]{0,6}",
            prop::sample::select(vec![
                "",
                "0s",
                "signer-email",
                "ops-slack",
                "Mars/Olympus",
                "Mon",
                "none",
                "tls"
            ])
            .prop_map(str::to_owned),
        ]
        .prop_map(Value::String)
        .boxed(),
        Value::Number(_) => prop_oneof![
            any::<i64>().prop_map(Value::from),
            (-2i64..100_000).prop_map(Value::from),
            any::<f64>().prop_map(Value::from)
        ]
        .boxed(),
        Value::Bool(_) => any::<bool>().prop_map(Value::Bool).boxed(),
        _ => json_value().boxed(),
    }
}

/// A field path as admission writes it (`spec.channels[1].name`, `spec.x.podLabels[team]`) or
/// a JSON pointer (`/spec/channels/1/name`), reduced to one form for comparison.
fn normalized(path: &str) -> String {
    if let Some(pointer) = path.strip_prefix('/') {
        let segments = pointer
            .split('/')
            .map(|s| s.replace("~1", "/").replace("~0", "~"));
        segments.collect::<Vec<_>>().join(".")
    } else {
        path.replace('[', ".").replace(']', "")
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn admission_of_any_spec_names_the_fields_it_refuses(spec in json_value()) {
        let mut object = FULL.clone();
        object["spec"] = spec;
        assert_refusals_name_spec_fields(object)?;
    }

    #[test]
    fn admission_of_a_mutated_example_names_the_fields_it_refuses(
        index in any::<prop::sample::Index>(),
        replacement in json_value(),
    ) {
        let pointer = index.get(&SPEC_POINTERS);
        let mut object = FULL.clone();
        let original = object.pointer(pointer).expect("pointer from the example").clone();
        *object.pointer_mut(pointer).expect("pointer from the example") = replacement.clone();
        let errors = assert_refusals_name_spec_fields(object)?;
        // A value of another type is refused at its own path. Nulls are pruned like absent
        // fields, and numbers may stand for strings in int-or-string fields such as quantities.
        let retyped = json_type(&original) != json_type(&replacement)
            && !matches!(replacement, Value::Null | Value::Number(_));
        if retyped {
            let at = normalized(pointer);
            prop_assert!(
                errors.iter().any(|e| normalized(&e.path) == at),
                "{} = {}: no error at {}: {:?}", pointer, replacement, at, errors
            );
        }
    }

    #[test]
    fn admission_of_an_example_with_one_leaf_changed_names_the_fields_it_refuses(
        (pointer, replacement) in prop::sample::select(SPEC_LEAVES.clone())
            .prop_flat_map(|pointer| {
                let original = FULL.pointer(&pointer).expect("pointer from the example");
                (Just(pointer), same_type(original))
            }),
    ) {
        let mut object = FULL.clone();
        *object.pointer_mut(&pointer).expect("pointer from the example") = replacement;
        assert_refusals_name_spec_fields(object)?;
    }
}

// ---------------------------------------------------------------------------------------------
// SIGNET_POLICY

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn signet_policy_garbage_is_refused_with_a_message(
        text in prop_oneof![any::<String>(), json_value().prop_map(|v| v.to_string()), "[{}\\[\\]\":, 0-9a-z]{0,16}"],
    ) {
        let args = PolicyArgs { policy: Some(text.clone()), policy_file: None, database_url: None };
        match load_policy(&args) {
            Ok(spec) => prop_assert!(false, "{:?} was accepted as {:?}", text, spec),
            Err(message) => prop_assert!(
                message.starts_with("SIGNET_POLICY is not valid JSON: ") || message.starts_with("the policy is invalid:\n  "),
                "{}", message
            ),
        }
    }
}

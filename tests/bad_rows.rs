//! Rows the application may write badly: empty, malformed or header-injecting addresses, an
//! unknown time zone, NULLs in every nullable column. The bad row's delivery fails with a reason
//! (or proceeds where a safe fallback exists); every other row is sent; the run completes.

mod common;

use common::worker::{HOUR, Harness, on_both};
use signet::crd::RunOutcome;
use signet::store::testing::{self, Seed};

on_both!(a_bad_row_fails_alone);

async fn a_bad_row_fails_alone(h: &Harness) {
    let spec = h.policy("  reminders: {channels: [console, mail, smtp]}");
    let good: Vec<Seed> = (0..3).map(|_| Seed::pending(25.0 * HOUR)).collect();
    let bad_addresses = [
        "",
        "not-an-address",
        "two@at@example.com",
        "victim@example.com\r\nBcc: evil@example.com",
    ];
    let bad: Vec<Seed> = bad_addresses
        .iter()
        .map(|address| Seed {
            signer_email: address.to_string(),
            ..Seed::pending(25.0 * HOUR)
        })
        .collect();
    // An unknown zone falls back to spec.timeZone (documented): the row is reminded.
    let unknown_zone = Seed {
        signer_time_zone: Some("Mars/Olympus_Mons".into()),
        ..Seed::pending(25.0 * HOUR)
    };
    let nulls = Seed {
        signer_name: None,
        ..Seed::pending(25.0 * HOUR)
    };
    h.seed(&good).await;
    h.seed(&bad).await;
    h.seed(&[unknown_zone.clone(), nulls.clone()]).await;
    testing::execute(
        &h.store,
        &format!(
            "UPDATE signature_workflows SET document_title = NULL, signing_url = NULL, \
             signer_time_zone = NULL WHERE id = '{}'",
            nulls.id
        ),
    )
    .await
    .unwrap();

    let run = h.run(&spec).await;
    // 9 workflows x 3 channels; the 4 bad addresses fail on both email channels.
    assert_eq!(run.due, 27, "{run:?}");
    assert_eq!(
        (
            run.deliveries.sent,
            run.deliveries.failed,
            run.deliveries.retrying
        ),
        (19, 8, 0),
        "{run:?}"
    );
    assert_eq!(run.outcome(), RunOutcome::CompletedWithFailures);

    let rows = testing::log_rows(&h.store).await.unwrap();
    for row in &rows {
        let seed_is_bad = bad.iter().any(|s| s.id == row.workflow_id);
        let expected = if seed_is_bad && row.channel != "console" {
            "failed"
        } else {
            "sent"
        };
        assert_eq!(row.state, expected, "{row:?}");
        if row.state == "failed" {
            let error = row.error.as_deref().unwrap_or_default();
            assert!(
                error.starts_with("ProviderRejected:") && error.contains("not an email address"),
                "{row:?}"
            );
        }
    }
    // Nothing reached the providers for a bad address, and no header was injected.
    let sendgrid: Vec<_> = h.http.requests();
    assert_eq!(sendgrid.len(), 5, "only the good rows went to SendGrid");
    let mails = h.smtp.mails();
    assert_eq!(mails.len(), 5, "only the good rows went over SMTP");
    assert!(
        mails
            .iter()
            .all(|m| !m.data.to_lowercase().contains("\nbcc:")
                && !m.to.iter().any(|t| t.contains("evil"))),
        "{mails:?}"
    );
    // The reminders of the rows with NULLs and an unknown zone read well.
    let console = h.logged();
    for s in [&unknown_zone, &nulls] {
        assert!(
            console
                .iter()
                .any(|(kind, _, id)| kind == "reminder" && *id == s.id.to_string()),
            "{s:?}"
        );
    }
}

//! Each channel as a provider sees it (request shapes, signatures, digests, SMTP), and how
//! their refusals and rate limits are handled, on a SQLite harness.

use super::*;

async fn sqlite_harness() -> Harness {
    Harness::new(Backend::Sqlite).await.unwrap()
}

#[tokio::test]
async fn sendgrid_request_shape() {
    let h = sqlite_harness().await;
    let spec = h.policy(
        "  reminders: {channels: [mail]}\n  escalation: {after: 1h, channels: [mail]}\n  timeout: {after: 14d}",
    );
    let reminded = Seed::pending(25.0 * HOUR);
    let mut exhausted = Seed::pending(100.0 * HOUR);
    exhausted.reminders_sent = 3;
    exhausted.last_reminded_ago = Some(2.0 * HOUR);
    h.seed(&[reminded.clone(), exhausted.clone()]).await;
    let run = h.run(&spec).await;
    assert_eq!(counts(&run), (2, 2, 0, 0), "{run:?}");

    let requests = h.http.requests();
    assert_eq!(requests.len(), 2);
    let log = testing::log_rows(&h.store).await.unwrap();
    for request in &requests {
        assert_eq!(
            (request.method.as_str(), request.path.as_str()),
            ("POST", "/v3/mail/send")
        );
        assert_eq!(request.header("authorization"), Some("Bearer SG.test"));
        assert_eq!(request.header("content-type"), Some("application/json"));
        let body = request.json();
        assert_eq!(
            body["from"],
            serde_json::json!({"email": "no-reply@example.com", "name": "Enrollment"})
        );
        let key = body["custom_args"]["signet_idempotency_key"]
            .as_str()
            .unwrap();
        let row = log
            .iter()
            .find(|r| r.idempotency_key == key)
            .expect("a logged key");
        assert_eq!(
            body["custom_args"]["signet_workflow_id"],
            row.workflow_id.to_string()
        );
        assert_eq!(body["content"][0]["type"], "text/plain");
        assert_eq!(body["content"][1]["type"], "text/html");
        if row.workflow_id == reminded.id {
            assert_eq!(
                body["personalizations"][0]["to"],
                serde_json::json!([{"email": reminded.signer_email, "name": "Ada Lovelace"}])
            );
            assert_eq!(
                body["subject"],
                "Reminder: please sign Enrollment agreement"
            );
            assert!(
                body["content"][0]["value"]
                    .as_str()
                    .unwrap()
                    .contains(&format!(
                        "Sign it here: https://sign.example.com/{}",
                        reminded.id
                    ))
            );
        } else {
            // Alerts go to the channel's own list.
            assert_eq!(
                body["personalizations"][0]["to"],
                serde_json::json!([{"email": "ops@example.com"}])
            );
            assert!(
                body["subject"]
                    .as_str()
                    .unwrap()
                    .starts_with("Still unsigned after 3 reminders")
            );
        }
    }
    let mut ids: Vec<_> = log
        .iter()
        .map(|r| r.provider_message_id.clone().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, ["msg-0", "msg-1"], "X-Message-Id is the receipt");
}

#[tokio::test]
async fn webhook_events_are_signed_and_verifiable() {
    use hmac::{Hmac, Mac};
    let h = sqlite_harness().await;
    let spec = h.policy("  reminders: {channels: [hook]}");
    let s = Seed::pending(25.0 * HOUR);
    h.seed(std::slice::from_ref(&s)).await;
    assert_eq!(h.run(&spec).await.deliveries.sent, 1);
    let request = &h.http.requests()[0];
    assert_eq!(request.path, "/events");
    let signature = request.header("x-signet-signature").unwrap();
    let (t, v1) = signature.split_once(',').unwrap();
    let t: i64 = t.strip_prefix("t=").unwrap().parse().unwrap();
    let v1 = hex::decode(v1.strip_prefix("v1=").unwrap()).unwrap();
    assert!((Utc::now().timestamp() - t).abs() < 60);
    // The receiver's check: HMAC-SHA256 over "<t>.<body>" with the shared key.
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"hook-secret").unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(&request.body);
    mac.verify_slice(&v1).expect("the signature verifies");
    let mut tampered = Hmac::<sha2::Sha256>::new_from_slice(b"hook-secret").unwrap();
    tampered.update(format!("{t}.").as_bytes());
    tampered.update(&[&request.body[..], b" "].concat());
    assert!(tampered.verify_slice(&v1).is_err());

    let event = request.json();
    let key = format!("signet:{}:reminder:1:hook", s.id);
    assert_eq!(event["type"], "signet.reminder");
    assert_eq!(event["id"], key.as_str());
    assert_eq!(
        request.header("x-signet-idempotency-key"),
        Some(key.as_str())
    );
    assert_eq!(event["data"]["workflowId"], s.id.to_string());
    assert_eq!(event["data"]["sequence"], 1);
    assert_eq!(event["data"]["signerEmail"], s.signer_email.as_str());
}

#[tokio::test]
async fn slack_gets_one_digest_per_run() {
    let h = sqlite_harness().await;
    let spec = h.policy("  reminders: {channels: [ops]}");
    let seeds: Vec<Seed> = (0..12).map(|_| Seed::pending(25.0 * HOUR)).collect();
    h.seed(&seeds).await;
    let run = h.run(&spec).await;
    assert_eq!(counts(&run), (12, 12, 0, 0));
    let requests = h.http.requests();
    assert_eq!(requests.len(), 1, "one message, never one per workflow");
    let text = requests[0].json()["text"].as_str().unwrap().to_owned();
    assert!(
        text.starts_with("Signet: 12 notifications (12 reminders)"),
        "{text}"
    );
    assert_eq!(
        text.matches("\n• reminder 1: Enrollment agreement").count(),
        10,
        "{text}"
    );
    assert!(text.ends_with("\n…and 2 more"), "{text}");
    assert!(
        testing::log_rows(&h.store)
            .await
            .unwrap()
            .iter()
            .all(|r| r.state == "sent")
    );
    assert_eq!(h.run(&spec).await.deliveries.sent, 0);
    assert_eq!(h.http.requests().len(), 1, "nothing due, no empty digest");
}

#[tokio::test]
async fn smtp_delivers_and_a_rejected_address_fails_only_its_row() {
    let h = sqlite_harness().await;
    let spec = h.policy("  reminders: {channels: [smtp]}");
    let good = Seed::pending(25.0 * HOUR);
    let mut bad = Seed::pending(25.0 * HOUR);
    bad.signer_email = "reject-me@example.com".into();
    h.seed(&[good.clone(), bad.clone()]).await;
    let run = h.run(&spec).await;
    assert_eq!(counts(&run), (2, 1, 0, 1), "{run:?}");
    let mails = h.smtp.mails();
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].to, [format!("<{}>", good.signer_email)]);
    assert_eq!(mails[0].from, "<no-reply@example.com>");
    assert!(
        mails[0]
            .data
            .contains("Subject: Reminder: please sign Enrollment agreement")
    );
    assert!(
        mails[0].data.contains(&format!(
            "Message-ID: <signet.{}.reminder.1.smtp@example.com>",
            good.id
        )),
        "{}",
        mails[0].data
    );
    assert!(mails[0].data.contains("Content-Type: text/html"));
    let log = testing::log_rows(&h.store).await.unwrap();
    let failed = log.iter().find(|r| r.workflow_id == bad.id).unwrap();
    assert_eq!(failed.state, "failed");
    assert!(
        failed
            .error
            .as_deref()
            .unwrap()
            .contains("ProviderRejected"),
        "{failed:?}"
    );
}

#[tokio::test]
async fn rate_limits_and_server_errors_are_retried_honouring_retry_after() {
    let h = sqlite_harness().await;
    let spec = h.policy("  reminders: {channels: [mail]}");
    h.seed(&[Seed::pending(25.0 * HOUR)]).await;
    h.http.enqueue([
        Reply::status(429).header("Retry-After", "1"),
        Reply::status(500),
    ]);
    let run = h.run(&spec).await;
    assert_eq!(
        (
            run.deliveries.sent,
            run.deliveries.failed,
            run.deliveries.retrying
        ),
        (1, 0, 0),
        "{run:?}"
    );
    let requests = h.http.requests();
    assert_eq!(requests.len(), 3);
    let waited = requests[1].at - requests[0].at;
    assert!(
        waited >= Duration::from_millis(990),
        "waited {waited:?} after Retry-After: 1"
    );
    assert!(
        requests[2].at - requests[1].at < Duration::from_millis(900),
        "backoff, not Retry-After"
    );
    assert_eq!(
        requests[0].body, requests[2].body,
        "the same request is retried"
    );
}

#[tokio::test]
async fn retry_after_as_an_http_date() {
    let h = sqlite_harness().await;
    let spec = h.policy("  reminders: {channels: [hook]}");
    h.seed(&[Seed::pending(25.0 * HOUR)]).await;
    let at = (Utc::now() + chrono::Duration::seconds(2))
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    h.http
        .enqueue([Reply::status(429).header("Retry-After", &at)]);
    let run = h.run(&spec).await;
    assert_eq!(run.deliveries.sent, 1, "{run:?}");
    let requests = h.http.requests();
    assert_eq!(requests.len(), 2);
    let waited = requests[1].at - requests[0].at;
    assert!(
        waited >= Duration::from_millis(900),
        "waited {waited:?} for {at}"
    );
}

#[tokio::test]
async fn a_400_is_permanent_for_its_row_only() {
    let h = sqlite_harness().await;
    let spec = h.policy("  reminders: {channels: [mail]}");
    let mut bad = Seed::pending(25.0 * HOUR);
    bad.signer_email = "bounce@example.com".into();
    let good: Vec<Seed> = (0..4).map(|_| Seed::pending(25.0 * HOUR)).collect();
    h.seed(&good).await;
    h.seed(std::slice::from_ref(&bad)).await;
    h.http.rule(|r| {
        String::from_utf8_lossy(&r.body)
            .contains("bounce@example.com")
            .then(|| Reply::status(400).body(r#"{"errors":[{"message":"invalid address"}]}"#))
    });
    let run = h.run(&spec).await;
    assert_eq!(counts(&run), (5, 4, 0, 1), "{run:?}");
    let bounced: Vec<_> = h
        .http
        .requests()
        .into_iter()
        .filter(|r| String::from_utf8_lossy(&r.body).contains("bounce@"))
        .collect();
    assert_eq!(bounced.len(), 1, "a 400 is not retried");
    let log = testing::log_rows(&h.store).await.unwrap();
    let row = log.iter().find(|r| r.workflow_id == bad.id).unwrap();
    assert_eq!(row.state, "failed");
    let error = row.error.as_deref().unwrap();
    assert!(
        error.starts_with("ProviderRejected")
            && error.contains("400")
            && error.contains("invalid address"),
        "{error}"
    );
    // Failed for good: the next run does not send it again.
    testing::expire_leases(&h.store).await.unwrap();
    assert_eq!(counts(&h.run(&spec).await), (0, 0, 0, 0));
}

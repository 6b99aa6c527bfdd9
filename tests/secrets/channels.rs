//! Channel errors, built from the library, carry neither a webhook URL nor a key.

use super::*;

/// Channel errors for each way a request can fail carry no secret: the Slack and webhook URLs
/// are the secret, and reqwest puts the URL in its errors. Also the timeout, which a whole
/// worker run would wait 30 seconds for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_errors_never_show_the_url_or_a_key() {
    use signet::notify::{self, HttpTimeouts};

    // Accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_base = format!("http://{}", silent.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            sockets.push(socket);
        }
    });
    let sink = HttpServer::start().await;
    sink.rule(|_| Some(Reply::status(503)));
    let refused = format!("http://127.0.0.1:{}", closed_port());
    let http = notify::http_client(HttpTimeouts {
        connect: Duration::from_millis(500),
        total: Duration::from_millis(500),
    })
    .unwrap();
    let out = common::Capture::default();
    let mut reasons = HashMap::new();
    for (base, expected) in [
        (silent_base.as_str(), "ProviderTimeout"),
        (refused.as_str(), "ProviderUnreachable"),
        (&format!("http://{}", sink.addr), "ProviderUnavailable"),
        // Not a URL at all: the channel's configuration is wrong, and says so without the value.
        (
            &format!("not a url {HOOK_TOKEN} {SLACK_TOKEN}"),
            "ChannelMisconfigured",
        ),
    ] {
        let spec = common::policy(&format!(
            "  database: {{urlSecretRef: {{name: db, key: url}}}}\n{}",
            r#"  reminders: {channels: [hook, ops]}
  channels:
    - name: hook
      webhook: {urlSecretRef: {name: hook, key: url}, signingSecretRef: {name: hook, key: hmac}}
    - name: ops
      slack: {webhookUrlSecretRef: {name: slack, key: url}}
"#
        ));
        let secrets: HashMap<String, String> = secret_env("", &slack_url(base), &hook_url(base))
            .into_iter()
            .collect();
        let env = |name: &str| secrets.get(name).cloned();
        let channels =
            notify::build_channels(&spec, &["hook", "ops"], &env, &http, &out.shared()).unwrap();
        let message = message();
        for (name, channel) in &channels {
            let result = match channel {
                notify::Channel::Message(channel) => channel.send(&message).await,
                notify::Channel::Digest(channel) => {
                    let digest = notify::Digest::from_messages(std::slice::from_ref(&message));
                    channel.send(&digest).await
                }
            };
            let err = result.expect_err("the send fails");
            let what = format!("channel {name} at {base:?}");
            assert_no_canary(&what, &format!("{err} {err:?}"));
            assert_eq!(err.reason(), expected, "{what}: {err}");
            reasons.insert(err.reason(), err.to_string());
        }
    }
    held.abort();
    // The messages still say what happened.
    assert!(
        reasons["ProviderUnreachable"].contains("onnect"),
        "{reasons:?}"
    );
}

fn message() -> signet::notify::Message {
    signet::notify::Message {
        log_id: 1,
        kind: signet::policy::NoticeKind::Reminder,
        sequence: 1,
        workflow_id: uuid::Uuid::new_v4(),
        workflow_type: "enrollment-agreement".into(),
        signer_email: "ada@example.com".into(),
        signer_name: None,
        document_title: None,
        signing_url: None,
        deadline: None,
        idempotency_key: "signet:test".into(),
        content: signet::policy::templates::Rendered {
            subject: "s".into(),
            text: "t".into(),
            html: "h".into(),
        },
    }
}

//! Test servers on 127.0.0.1: an HTTP server that records requests and answers from a script
//! (SendGrid, Slack, webhooks), and an SMTP server speaking enough of the protocol for lettre.
//! Both stop when dropped.

#![allow(dead_code)]

pub mod worker;

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, Response};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// A request the HTTP server received.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
    pub at: Instant,
}

impl Recorded {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

/// A scripted answer.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// How long the server waits before answering.
    pub delay: Duration,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: vec![],
            body: String::new(),
            delay: Duration::ZERO,
        }
    }

    #[allow(dead_code)] // not every test binary that includes `common` uses it
    pub fn delayed(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    #[allow(dead_code)] // not every test binary that includes `common` uses it
    pub fn body(mut self, body: &str) -> Self {
        self.body = body.to_owned();
        self
    }
}

type Rule = Box<dyn Fn(&Recorded) -> Option<Reply> + Send + Sync>;

#[derive(Default)]
struct HttpState {
    requests: Vec<Recorded>,
    /// Answers used once each, in order, before the rules.
    queue: VecDeque<Reply>,
    /// Answers for requests that match (e.g. one bad address), checked after the queue.
    rules: Vec<Rule>,
}

/// The recording HTTP server.
pub struct HttpServer {
    pub addr: SocketAddr,
    state: Arc<Mutex<HttpState>>,
    task: tokio::task::JoinHandle<()>,
}

impl HttpServer {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(HttpState::default()));
        let shared = state.clone();
        let app = axum::Router::new().fallback(move |request: Request<Body>| {
            let state = shared.clone();
            async move {
                let (parts, body) = request.into_parts();
                let body = axum::body::to_bytes(body, 16 << 20).await.unwrap().to_vec();
                let recorded = Recorded {
                    method: parts.method.to_string(),
                    path: parts.uri.path().to_owned(),
                    headers: parts
                        .headers
                        .iter()
                        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
                        .collect(),
                    body,
                    at: Instant::now(),
                };
                let reply = {
                    let mut state = state.lock().unwrap();
                    let n = state.requests.len();
                    let reply = state
                        .queue
                        .pop_front()
                        .or_else(|| state.rules.iter().find_map(|rule| rule(&recorded)))
                        .unwrap_or_else(|| {
                            Reply::status(202).header("X-Message-Id", &format!("msg-{n}"))
                        });
                    state.requests.push(recorded);
                    reply
                };
                tokio::time::sleep(reply.delay).await;
                let mut response = Response::builder().status(reply.status);
                for (name, value) in reply.headers {
                    response = response.header(name, value);
                }
                response.body(Body::from(reply.body)).unwrap()
            }
        });
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { addr, state, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Answers the next requests with `replies`, in order.
    pub fn enqueue(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state.lock().unwrap().queue.extend(replies);
    }

    /// Answers matching requests with the rule's reply.
    pub fn rule(&self, rule: impl Fn(&Recorded) -> Option<Reply> + Send + Sync + 'static) {
        self.state.lock().unwrap().rules.push(Box::new(rule));
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A message the SMTP server accepted.
#[derive(Clone, Debug)]
pub struct Mail {
    /// The name the client gave in EHLO (or HELO).
    pub hello: String,
    pub from: String,
    pub to: Vec<String>,
    /// The message as sent, dot-stuffing undone, lines ending in `\n`.
    pub data: String,
}

impl Mail {
    /// The message as a mail client parses it.
    pub fn parsed(&self) -> mail_parser::Message<'_> {
        mail_parser::MessageParser::default()
            .parse(self.data.as_bytes())
            .expect("a parseable email")
    }
}

/// An SMTP server (no TLS, no auth) that accepts every recipient except those containing
/// "reject", which get a permanent 550; [`SmtpServer::refuse_senders`] makes it answer every
/// MAIL FROM with a reply of the caller's (530: authentication required).
pub struct SmtpServer {
    pub port: u16,
    mails: Arc<Mutex<Vec<Mail>>>,
    refusal: Arc<Mutex<Option<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl SmtpServer {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mails = Arc::new(Mutex::new(Vec::new()));
        let refusal = Arc::new(Mutex::new(None));
        let (shared, refused) = (mails.clone(), refusal.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                let (mails, refusal) = (shared.clone(), refused.clone());
                tokio::spawn(async move {
                    let _ = session(socket, mails, refusal).await;
                });
            }
        });
        Self {
            port,
            mails,
            refusal,
            task,
        }
    }

    pub fn mails(&self) -> Vec<Mail> {
        self.mails.lock().unwrap().clone()
    }

    /// Answers every MAIL FROM with `reply` (e.g. "530 5.7.0 Authentication required"), or,
    /// with `None`, accepts senders again.
    pub fn refuse_senders(&self, reply: Option<&str>) {
        *self.refusal.lock().unwrap() = reply.map(|r| format!("{r}\r\n"));
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn session(
    socket: tokio::net::TcpStream,
    mails: Arc<Mutex<Vec<Mail>>>,
    refusal: Arc<Mutex<Option<String>>>,
) -> std::io::Result<()> {
    let (read, mut write) = socket.into_split();
    let mut lines = BufReader::new(read).lines();
    write
        .write_all(b"220 localhost ESMTP signet-test\r\n")
        .await?;
    let mut hello = String::new();
    let mut current = Mail {
        hello: String::new(),
        from: String::new(),
        to: vec![],
        data: String::new(),
    };
    while let Some(line) = lines.next_line().await? {
        let upper = line.to_ascii_uppercase();
        let refused = refusal.lock().unwrap().clone();
        let reply: &[u8] = if let Some(refused) = refused
            .as_deref()
            .filter(|_| upper.starts_with("MAIL FROM:"))
        {
            write.write_all(refused.as_bytes()).await?;
            continue;
        } else if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            hello = line[4..].trim().to_owned();
            b"250-localhost\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n"
        } else if upper.starts_with("MAIL FROM:") {
            current = Mail {
                hello: hello.clone(),
                from: line[10..].trim().to_owned(),
                to: vec![],
                data: String::new(),
            };
            b"250 OK\r\n"
        } else if upper.starts_with("RCPT TO:") {
            if line.contains("reject") {
                b"550 5.1.1 no such user\r\n"
            } else {
                current.to.push(line[8..].trim().to_owned());
                b"250 OK\r\n"
            }
        } else if upper == "DATA" {
            write.write_all(b"354 go ahead\r\n").await?;
            while let Some(data) = lines.next_line().await? {
                if data == "." {
                    break;
                }
                // RFC 5321 4.5.2: a line the client began with an extra dot.
                current
                    .data
                    .push_str(data.strip_prefix('.').unwrap_or(&data));
                current.data.push('\n');
            }
            mails.lock().unwrap().push(current.clone());
            b"250 2.0.0 queued\r\n"
        } else if upper == "QUIT" {
            write.write_all(b"221 bye\r\n").await?;
            return Ok(());
        } else {
            // RSET, NOOP and anything else lettre may say.
            b"250 OK\r\n"
        };
        write.write_all(reply).await?;
    }
    Ok(())
}

/// A writer into memory, for the log channel and the summary.
#[derive(Clone, Default)]
pub struct Capture(pub Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    pub fn shared(&self) -> signet::notify::log::SharedWriter {
        Arc::new(Mutex::new(Box::new(self.clone())))
    }

    pub fn lines(&self) -> Vec<serde_json::Value> {
        String::from_utf8(self.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    }
}

/// A validated policy spec from the YAML of its `spec:` body (indented two spaces).
pub fn policy(spec: &str) -> signet::crd::SignaturePolicySpec {
    let yaml = format!(
        "apiVersion: signet.dev/v1alpha1\nkind: SignaturePolicy\nmetadata: {{name: p, namespace: ns}}\nspec:\n{spec}"
    );
    let value = signet::manifests::parse_documents(&yaml).unwrap().remove(0);
    let verdict = signet::admission::Admission::new().check(value);
    assert!(verdict.errors.is_empty(), "{:#?}\n{yaml}", verdict.errors);
    verdict.policy.unwrap().spec
}

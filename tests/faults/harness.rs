//! The fault tests' harness: a deterministic PRNG, a webhook sink on 127.0.0.1 that verifies
//! signatures and injects faults, and the `signet` worker as a child process that is killed
//! (SIGKILL) when its guard is dropped.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, Response};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

pub const SIGNING_KEY: &str = "faults-signing-key";
/// Longer than any run of this suite: a run that takes this long has hung.
pub const HANG: Duration = Duration::from_secs(90);

// ---------------------------------------------------------------------------------------------
// A small deterministic PRNG (SplitMix64): every random choice of a scenario follows its seed.

#[derive(Clone, Debug)]
pub struct Prng(pub u64);

impl Prng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }

    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

// ---------------------------------------------------------------------------------------------
// The sink: a webhook receiver that verifies signatures and answers from a fault profile.

/// What the sink injects; each request draws from the sink's PRNG.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Accepted requests are answered after 0 to this many milliseconds.
    pub max_delay_ms: u64,
    /// Share answered 429 (Retry-After alternately in seconds and as an HTTP date).
    pub p429: f64,
    /// Share answered 500.
    pub p500: f64,
    /// Share accepted but answered after `slow_ms` (past the client's timeout).
    pub p_slow: f64,
    pub slow_ms: u64,
    /// Share accepted, then the connection closed without an answer.
    pub p_drop: f64,
}

#[derive(Clone, Debug)]
pub struct Hit {
    pub key: String,
    pub status: u16,
    /// The sink finished answering (false: the client was gone or the worker was killed).
    pub answered: bool,
}

#[derive(Default)]
struct SinkState {
    hits: Vec<Hit>,
    bad_signatures: u64,
    injected: BTreeMap<&'static str, u64>,
    faults: Faults,
    rng: Option<Prng>,
}

pub struct Sink {
    addr: SocketAddr,
    state: Arc<Mutex<SinkState>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn verify(signature: &str, body: &[u8]) -> bool {
    let Some((t, v1)) = signature
        .strip_prefix("t=")
        .and_then(|rest| rest.split_once(",v1="))
    else {
        return false;
    };
    let Ok(expected) = hex::decode(v1) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(SIGNING_KEY.as_bytes()).unwrap();
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

impl Sink {
    pub async fn start(seed: u64) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(SinkState {
            rng: Some(Prng(seed)),
            ..SinkState::default()
        }));
        let shared = state.clone();
        let app = axum::Router::new().fallback(move |request: Request<Body>| {
            let state = shared.clone();
            async move { answer(state, request).await }
        });
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { addr, state, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub fn set_faults(&self, faults: Faults) {
        self.state.lock().unwrap().faults = faults;
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.state.lock().unwrap().hits.clone()
    }

    pub fn injected(&self) -> BTreeMap<&'static str, u64> {
        self.state.lock().unwrap().injected.clone()
    }

    pub fn bad_signatures(&self) -> u64 {
        self.state.lock().unwrap().bad_signatures
    }

    /// How many requests the sink has received.
    pub fn requests(&self) -> usize {
        self.state.lock().unwrap().hits.len()
    }

    /// Accepted requests per idempotency key.
    pub fn accepted(&self) -> BTreeMap<String, u64> {
        let mut accepted = BTreeMap::new();
        for hit in self.hits() {
            if (200..300).contains(&hit.status) {
                *accepted.entry(hit.key).or_default() += 1;
            }
        }
        accepted
    }
}

async fn answer(state: Arc<Mutex<SinkState>>, request: Request<Body>) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap().to_vec();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let key = header("x-signet-idempotency-key");
    let signed = verify(&header("x-signet-signature"), &body);
    let event: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let poison = event["data"]["signerEmail"]
        .as_str()
        .is_some_and(|e| e.contains("poison"));
    let (status, wait, retry_after, index) = {
        let mut s = state.lock().unwrap();
        let faults = s.faults.clone();
        let rng = s.rng.as_mut().unwrap();
        let (status, wait, retry_after, what) = if !signed || event["id"] != key.as_str() {
            (401, 0, None, "401 bad signature")
        } else if poison {
            (400, 0, None, "400 poison")
        } else if rng.chance(faults.p429) {
            if rng.chance(0.5) {
                (429, 0, Some("1".to_owned()), "429 Retry-After seconds")
            } else {
                let at = chrono::Utc::now() + chrono::Duration::seconds(2);
                let date = at.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
                (429, 0, Some(date), "429 Retry-After date")
            }
        } else if rng.chance(faults.p500) {
            (500, 0, None, "500")
        } else if rng.chance(faults.p_drop) {
            (
                202,
                0,
                Some("drop".to_owned()),
                "202 then the connection closed unanswered",
            )
        } else if rng.chance(faults.p_slow) {
            (
                202,
                faults.slow_ms,
                None,
                "202 slower than the client timeout",
            )
        } else {
            let wait = rng.below(faults.max_delay_ms + 1);
            (202, wait, None, "202")
        };
        if status == 401 {
            s.bad_signatures += 1;
        }
        *s.injected.entry(what).or_default() += 1;
        s.hits.push(Hit {
            key,
            status,
            answered: false,
        });
        (status, wait, retry_after, s.hits.len() - 1)
    };
    if retry_after.as_deref() == Some("drop") {
        // Unwinding out of the handler makes the server close the connection unanswered
        // (resume_unwind: without the panic message).
        std::panic::resume_unwind(Box::new("the sink drops the connection"));
    }
    tokio::time::sleep(Duration::from_millis(wait)).await;
    state.lock().unwrap().hits[index].answered = true;
    let mut response = Response::builder().status(status);
    if let Some(value) = retry_after {
        response = response.header("Retry-After", value);
    }
    let text = if status == 400 { "poison row" } else { "" };
    response.body(Body::from(text)).unwrap()
}

// ---------------------------------------------------------------------------------------------
// The worker as a child process, killed (SIGKILL) when its guard is dropped.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Worker {
    Reminders,
    Timeouts,
}

impl Worker {
    pub fn command(self) -> &'static str {
        match self {
            Worker::Reminders => "send-reminders",
            Worker::Timeouts => "check-timeouts",
        }
    }

    pub fn kind(self) -> &'static str {
        match self {
            Worker::Reminders => "reminder",
            Worker::Timeouts => "timeout_alert",
        }
    }

    /// Two signed webhook channels to the same sink, so "one row per channel" is tested.
    pub fn policy(self) -> String {
        let section = match self {
            Worker::Reminders => {
                r#""reminders": {"firstAfter": "24h", "every": "48h", "maxReminders": 3, "channels": ["hook", "ops"]}"#
            }
            Worker::Timeouts => {
                r#""timeout": {"after": "14d", "schedule": "0 * * * *", "channels": ["hook", "ops"]}"#
            }
        };
        let hook = |name: &str| {
            format!(
                r#"{{"name": "{name}", "webhook": {{"urlSecretRef": {{"name": "{name}", "key": "url"}}, "signingSecretRef": {{"name": "{name}", "key": "signing"}}}}}}"#
            )
        };
        format!(
            r#"{{"database": {{"urlSecretRef": {{"name": "app-db", "key": "url"}}}}, {section}, "channels": [{}, {}]}}"#,
            hook("hook"),
            hook("ops")
        )
    }
}

pub const CHANNELS: [&str; 2] = ["hook", "ops"];

/// A running worker process; dropping it kills the process.
pub struct Proc {
    child: Option<Child>,
    stdout: std::path::PathBuf,
    stderr: std::path::PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.stdout);
        let _ = std::fs::remove_file(&self.stderr);
    }
}

/// How a run ended.
#[derive(Debug)]
pub struct Ended {
    pub status: ExitStatus,
    pub summary: Option<serde_json::Value>,
    pub stderr: String,
}

impl Ended {
    pub fn killed(&self) -> bool {
        self.status.signal() == Some(9)
    }

    pub fn possible_duplicates(&self) -> u64 {
        self.summary
            .as_ref()
            .and_then(|s| s["possibleDuplicates"].as_u64())
            .unwrap_or(0)
    }
}

impl Proc {
    pub fn spawn(worker: Worker, db: &str, sink: &Sink, args: &[&str]) -> Self {
        let dir = std::env::temp_dir();
        let id = Uuid::new_v4().simple();
        let stdout = dir.join(format!("signet-faults-{id}.out"));
        let stderr = dir.join(format!("signet-faults-{id}.err"));
        let child = Command::new(env!("CARGO_BIN_EXE_signet"))
            .arg(worker.command())
            .args(args)
            .env_remove("SIGNET_DATABASE_URL")
            .env("SIGNET_LOG_LEVEL", "warn")
            .env("SIGNET_POLICY", worker.policy())
            .env("SIGNET_SECRET_APP_DB_URL", db)
            .env("SIGNET_SECRET_HOOK_URL", sink.url())
            .env("SIGNET_SECRET_HOOK_SIGNING", SIGNING_KEY)
            .env("SIGNET_SECRET_OPS_URL", sink.url())
            .env("SIGNET_SECRET_OPS_SIGNING", SIGNING_KEY)
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).unwrap())
            .stderr(File::create(&stderr).unwrap())
            .spawn()
            .expect("signet starts");
        Self {
            child: Some(child),
            stdout,
            stderr,
        }
    }

    /// Waits for the process to exit; a process still running after [`HANG`] fails the test.
    pub async fn wait(self) -> Ended {
        self.wait_or_kill(|| false).await
    }

    /// [`Self::wait`], killing the process with SIGKILL as soon as `kill_now` says so (it is
    /// asked every 2ms).
    pub async fn wait_or_kill(mut self, mut kill_now: impl FnMut() -> bool) -> Ended {
        let started = Instant::now();
        let child = self.child.as_mut().unwrap();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if kill_now() {
                child.kill().unwrap();
                break child.wait().unwrap();
            }
            assert!(started.elapsed() < HANG, "the worker hung for {HANG:?}");
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        self.child = None;
        let stdout = std::fs::read_to_string(&self.stdout).unwrap();
        let stderr = std::fs::read_to_string(&self.stderr).unwrap();
        let summary = stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .rfind(|v| v.get("outcome").is_some());
        assert!(
            !stderr.contains("panicked"),
            "the worker panicked: {stderr}"
        );
        Ended {
            status,
            summary,
            stderr,
        }
    }
}

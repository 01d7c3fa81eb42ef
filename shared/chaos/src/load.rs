//! The client: mixed load (emails, campaigns, clean and infected uploads, rescans) from
//! a number of concurrent clients, paced or not, each submission recorded with what it
//! asked for, so the reconciler can check that what was accepted happened.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testkit::fixtures;
use tokio::sync::watch;
use tokio::task::JoinSet;
use uuid::Uuid;

/// Campaign size of the mixed load.
pub const CAMPAIGN_RECIPIENTS: usize = 5;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Email,
    Campaign,
    Upload,
    Rescan,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Email => "email",
            Kind::Campaign => "campaign",
            Kind::Upload => "upload",
            Kind::Rescan => "rescan",
        }
    }
}

/// What an accepted submission must lead to.
#[derive(Clone, Debug)]
pub enum Expect {
    /// One message to each address.
    Messages(Vec<String>),
    /// The upload ends with this verdict; a clean one downloads these bytes.
    Upload {
        id: Uuid,
        infected: bool,
        bytes: Arc<Vec<u8>>,
    },
    /// The request finishes.
    Finished,
}

#[derive(Clone, Debug)]
pub enum Outcome {
    Accepted(Uuid),
    /// An HTTP error answer: status, problem code, whether it said Retry-After.
    Refused {
        status: u16,
        code: String,
        retry_after: bool,
    },
    /// No answer (connection refused or reset, timeout).
    Unanswered(String),
}

#[derive(Clone, Debug)]
pub struct Submission {
    pub kind: Kind,
    /// When it was sent, since the scenario's start.
    pub at: Duration,
    pub latency: Duration,
    pub outcome: Outcome,
    pub expect: Expect,
}

impl Submission {
    pub fn accepted(&self) -> Option<Uuid> {
        match self.outcome {
            Outcome::Accepted(id) => Some(id),
            _ => None,
        }
    }
}

/// Weights of each kind in the mix.
#[derive(Clone, Copy, Debug)]
pub struct Mix {
    pub email: u32,
    pub campaign: u32,
    pub upload: u32,
    pub infected: u32,
    pub rescan: u32,
}

impl Mix {
    pub const MIXED: Mix = Mix {
        email: 60,
        campaign: 10,
        upload: 15,
        infected: 5,
        rescan: 10,
    };
    pub const EMAILS: Mix = Mix {
        email: 1,
        campaign: 0,
        upload: 0,
        infected: 0,
        rescan: 0,
    };
    pub const UPLOADS: Mix = Mix {
        email: 0,
        campaign: 0,
        upload: 3,
        infected: 1,
        rescan: 1,
    };

    fn pick(&self, roll: u32) -> (Kind, bool) {
        let total = self.email + self.campaign + self.upload + self.infected + self.rescan;
        let mut roll = roll % total.max(1);
        for (weight, kind, infected) in [
            (self.email, Kind::Email, false),
            (self.campaign, Kind::Campaign, false),
            (self.upload, Kind::Upload, false),
            (self.infected, Kind::Upload, true),
            (self.rescan, Kind::Rescan, false),
        ] {
            if roll < weight {
                return (kind, infected);
            }
            roll -= weight;
        }
        (Kind::Email, false)
    }
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Arc<String>,
    clean_uploads: Arc<Vec<Uuid>>,
    epoch: Instant,
}

impl Client {
    pub fn new(base: &str, token: &str, clean_uploads: &[Uuid], epoch: Instant) -> Client {
        Client {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap_or_default(),
            base: base.to_owned(),
            token: Arc::new(token.to_owned()),
            clean_uploads: Arc::new(clean_uploads.to_vec()),
            epoch,
        }
    }

    /// One submission of `kind`.
    pub async fn submit(&self, kind: Kind, infected: bool, roll: u32) -> Submission {
        let tag = &Uuid::new_v4().simple().to_string()[..16];
        let at = self.epoch.elapsed();
        let started = Instant::now();
        let (request, expect) = match kind {
            Kind::Email => {
                let to = format!("r-{tag}@example.org");
                let body = json!({"to": [to], "subject": format!("chaos {tag}"),
                    "text": format!("Message {tag}")});
                (
                    self.post_json("/api/v1/emails", &body),
                    Expect::Messages(vec![to]),
                )
            }
            Kind::Campaign => {
                let to: Vec<String> = (0..CAMPAIGN_RECIPIENTS)
                    .map(|i| format!("c{i}-{tag}@example.org"))
                    .collect();
                let body = json!({"name": format!("chaos {tag}"), "subject": format!("chaos {tag}"),
                    "text": "Hello reader", "recipients": to});
                (
                    self.post_json("/api/v1/campaigns", &body),
                    Expect::Messages(to),
                )
            }
            Kind::Upload => {
                // Unique bytes (an identical upload is answered with the earlier one),
                // so a mixed-up download cannot pass either.
                let bytes = if infected {
                    // The rule matches the test file at the start of any file.
                    [fixtures::EICAR, b"\n", tag.as_bytes()].concat()
                } else {
                    format!("chaos upload {tag} {roll}\n")
                        .repeat(64)
                        .into_bytes()
                };
                let bytes = Arc::new(bytes);
                let form = reqwest::multipart::Form::new().part(
                    "file",
                    reqwest::multipart::Part::bytes(bytes.to_vec()).file_name(if infected {
                        "sample.txt"
                    } else {
                        "notes.txt"
                    }),
                );
                let request = self
                    .http
                    .post(format!("{}/api/v1/uploads", self.base))
                    .bearer_auth(self.token.as_str())
                    .multipart(form);
                (
                    request,
                    Expect::Upload {
                        id: Uuid::nil(),
                        infected,
                        bytes,
                    },
                )
            }
            Kind::Rescan => {
                let pick = self.clean_uploads[roll as usize % self.clean_uploads.len().max(1)];
                (
                    self.post_json("/api/v1/scans", &json!({"upload_id": pick})),
                    Expect::Finished,
                )
            }
        };
        let answer = request.send().await;
        let latency = started.elapsed();
        let (outcome, expect) = match answer {
            Err(err) => (Outcome::Unanswered(short_error(&err)), expect),
            Ok(response) => {
                let status = response.status().as_u16();
                let retry_after = response.headers().contains_key("retry-after");
                let body: Value = response.json().await.unwrap_or(Value::Null);
                if (200..300).contains(&status) {
                    let id = if kind == Kind::Upload {
                        body["request_id"].as_str()
                    } else {
                        body["id"].as_str()
                    };
                    match id.and_then(|s| s.parse().ok()) {
                        Some(id) => {
                            let expect = match expect {
                                Expect::Upload {
                                    infected, bytes, ..
                                } => Expect::Upload {
                                    id: body["id"]
                                        .as_str()
                                        .and_then(|s| s.parse().ok())
                                        .unwrap_or_default(),
                                    infected,
                                    bytes,
                                },
                                other => other,
                            };
                            (Outcome::Accepted(id), expect)
                        }
                        None => (
                            Outcome::Refused {
                                status,
                                code: "no id in the 202".to_owned(),
                                retry_after,
                            },
                            expect,
                        ),
                    }
                } else {
                    let code = body["code"].as_str().unwrap_or("-").to_owned();
                    (
                        Outcome::Refused {
                            status,
                            code,
                            retry_after,
                        },
                        expect,
                    )
                }
            }
        };
        Submission {
            kind,
            at,
            latency,
            outcome,
            expect,
        }
    }

    fn post_json(&self, path: &str, body: &Value) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.base))
            .bearer_auth(self.token.as_str())
            .json(body)
    }
}

fn short_error(err: &reqwest::Error) -> String {
    if err.is_timeout() {
        "timeout".to_owned()
    } else if err.is_connect() {
        "connection refused".to_owned()
    } else {
        "connection closed".to_owned()
    }
}

/// Load running in the background until [`Load::stop`].
pub struct Load {
    stop: watch::Sender<bool>,
    tasks: JoinSet<Vec<Submission>>,
}

impl Load {
    /// `clients` concurrent clients; `rate` submissions per second in all (`None`: as
    /// fast as answers come).
    pub fn start(client: &Client, clients: usize, rate: Option<f64>, mix: Mix) -> Load {
        let (stop, stopped) = watch::channel(false);
        let mut tasks = JoinSet::new();
        for n in 0..clients {
            let client = client.clone();
            let stopped = stopped.clone();
            tasks.spawn(async move {
                let mut done = Vec::new();
                let period = rate.map(|r| Duration::from_secs_f64(clients as f64 / r.max(0.001)));
                let mut next = Instant::now()
                    + period.map_or(Duration::ZERO, |p| p.mul_f64(n as f64 / clients as f64));
                let mut roll = (n as u32).wrapping_mul(7919);
                while !*stopped.borrow() {
                    if let Some(period) = period {
                        tokio::time::sleep_until(next.into()).await;
                        next += period;
                        if *stopped.borrow() {
                            break;
                        }
                    }
                    roll = roll.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                    let (kind, infected) = mix.pick(roll >> 8);
                    done.push(client.submit(kind, infected, roll >> 16).await);
                }
                done
            });
        }
        Load { stop, tasks }
    }

    /// Stops the clients (each finishes the submission in hand); every submission.
    pub async fn stop(mut self) -> Vec<Submission> {
        let _ = self.stop.send(true);
        let mut all = Vec::new();
        while let Some(done) = self.tasks.join_next().await {
            if let Ok(done) = done {
                all.extend(done);
            }
        }
        all.sort_by_key(|s| s.at);
        all
    }
}

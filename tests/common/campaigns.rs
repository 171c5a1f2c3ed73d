//! The campaigns service and sender workers for tests: started on their own namespace, SMTP
//! server (`mailbox`) and port, and the API calls the tests make.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Value as Json};

use super::mailbox::{Mail, Mailbox};
use super::{free_port, wait_for, Case};

pub const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";

pub struct Campaigns {
    pub base: String,
    pub mailbox: Mailbox,
    pub ns: String,
    /// Indexes of the spawned processes: the service, then the workers.
    pub serve: usize,
    pub workers: Vec<usize>,
    serve_args: Vec<String>,
    worker_args: Vec<String>,
}

/// The service and `workers` sender workers, on their own namespace, SMTP server and port.
pub async fn start(case: &mut Case, workers: usize, sender_extra: &[&str]) -> Campaigns {
    let mailbox = Mailbox::start(&case.stack.python, case.lake.path().join("mail")).await;
    let port = free_port();
    let ns = case.prefix.clone();
    let base = format!("http://127.0.0.1:{port}");
    let common = |cmd: &str| -> Vec<String> {
        let mut a: Vec<String> = ["campaigns", cmd, "--namespace", &ns, "--smtp-url", &mailbox.url(), "--public-url", &base].iter().map(|s| s.to_string()).collect();
        a.extend(["--smtp-retry-backoff", "300ms", "--campaign-partitions", "4"].iter().map(|s| s.to_string()));
        a
    };
    let mut serve_args = common("serve");
    serve_args.extend(["--port".into(), port.to_string()]);
    let serve = case.spawn(&serve_args, "campaigns-serve");
    let mut worker_args = common("send");
    worker_args.extend(sender_extra.iter().map(|s| s.to_string()));
    let workers = (0..workers).map(|i| case.spawn(&worker_args, &format!("campaigns-send-{i}"))).collect();
    let c = Campaigns { base, mailbox, ns, serve, workers, serve_args, worker_args };
    c.wait_healthy().await;
    c
}

impl Campaigns {
    pub async fn wait_healthy(&self) {
        let http = reqwest::Client::new();
        let base = self.base.clone();
        wait_for(Duration::from_secs(90), "funnel campaigns serve", || async { matches!(http.get(format!("{base}/health")).send().await, Ok(r) if r.status() == 200) }).await;
    }

    /// kill -9 the service and start it again (not waiting for it).
    pub fn kill_serve(&mut self, case: &mut Case) {
        case.kill9(self.serve);
        self.serve = case.spawn(&self.serve_args, "campaigns-serve");
    }

    /// kill -9 worker `i` and start it again.
    pub fn kill_worker(&mut self, case: &mut Case, i: usize) {
        case.kill9(self.workers[i]);
        self.workers[i] = case.spawn(&self.worker_args, &format!("campaigns-send-{i}"));
    }
}

pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub async fn create(case: &Case, c: &Campaigns, body: Json) -> String {
    let r = case.http().post(format!("{}/api/v1/campaigns", c.base)).json(&body).send().await.unwrap();
    let status = r.status().as_u16();
    let v: Json = r.json().await.unwrap();
    assert_eq!(status, 201, "create: {v}");
    v["id"].as_str().unwrap().to_string()
}

pub async fn status(case: &Case, c: &Campaigns, id: &str) -> Json {
    case.http().get(format!("{}/api/v1/campaigns/{id}/status", c.base)).send().await.unwrap().json().await.unwrap()
}

pub async fn wait_state(case: &Case, c: &Campaigns, id: &str, state: &str, timeout: Duration) -> Json {
    let mut last = Json::Null;
    let t0 = std::time::Instant::now();
    while t0.elapsed() < timeout {
        last = status(case, c, id).await;
        if last["state"] == state {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // What the SMTP server got for the campaign, next to what the status counts, and the
    // workers' last words: a request never mailed and an outcome mailed but never read differ.
    let mails: Vec<Mail> = c.mailbox.mails().into_iter().filter(|m| m.headers.get("x-funnel-campaign").map(String::as_str) == Some(id)).collect();
    let people = per_recipient(&mails).len();
    let tail = |log: String| log.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
    let workers: Vec<String> = (0..c.workers.len()).map(|i| format!("campaigns-send-{i} log (tail):\n{}", tail(case.log(&format!("campaigns-send-{i}"))))).collect();
    panic!(
        "campaign {id} not {state} within {timeout:?}: {last}\nthe SMTP server holds {} mails of it to {people} people\nserve log:\n{}\n{}",
        mails.len(),
        case.log("campaigns-serve"),
        workers.join("\n")
    );
}

pub fn per_recipient(mails: &[Mail]) -> HashMap<String, usize> {
    let mut n = HashMap::new();
    for m in mails {
        *n.entry(m.to.clone()).or_default() += 1;
    }
    n
}

pub fn listed(n: usize) -> Vec<Json> {
    let mut people: Vec<Json> = (0..n).map(|i| json!({"email": format!("p{i}@list.example"), "first_name": format!("P{i}"), "city": format!("City{i}")})).collect();
    people[5]["first_name"] = json!("<Zé & Co>");
    for i in 0..3 {
        people.push(json!({"email": format!("tempfail-2-{i}@list.example"), "first_name": format!("T{i}"), "city": "Recife"}));
        people.push(json!({"email": format!("bounce-{i}@list.example"), "first_name": format!("B{i}"), "city": "Natal"}));
    }
    // No first_name: fails alone, never half-rendered.
    people.push(json!({"email": "nameless@list.example", "city": "Salvador"}));
    people
}

pub fn campaign_body(name: &str, recipients: Vec<Json>, batch_size: i64) -> Json {
    json!({
        "name": name, "sender": "Shop <news@shop.example>",
        "subject": "Hello {{ first_name }}", "batch_size": batch_size,
        "text": "Dear {{ first_name }} from {{ city }}, see {{ track(\"https://shop.example/sale\") }}",
        "html": "<html><body><p>Dear {{ first_name }} from {{ city }}</p><a href=\"{{ track('https://shop.example/sale') }}\">sale</a> <a href=\"{{ track('https://shop.example/new') }}\">new</a></body></html>",
        "audience": {"recipients": recipients}, "scheduled_at": now_rfc3339(),
    })
}


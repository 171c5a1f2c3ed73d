//! Email campaigns against a real SMTP server (aiosmtpd, mail read back from its Maildir), the
//! broker, the registry and the lake: one mail per recipient, personalised and with the
//! one-click headers; 4xx retried, 5xx bounced and suppressed; bad input refused with nothing
//! written; opens, clicks and unsubscribes tracked with signed links and counted.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::mailbox::Mailbox;
use common::*;
use serde_json::{json, Value as Json};

const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";

struct Campaigns {
    base: String,
    mailbox: Mailbox,
    ns: String,
}

/// The service and `workers` sender workers, on their own namespace, SMTP server and port.
async fn start(case: &mut Case, workers: usize) -> Campaigns {
    let mailbox = Mailbox::start(&case.stack.python, case.lake.path().join("mail")).await;
    let port = free_port();
    let ns = case.prefix.clone();
    let base = format!("http://127.0.0.1:{port}");
    let common = |cmd: &str| -> Vec<String> {
        let mut a: Vec<String> = ["campaigns", cmd, "--namespace", &ns, "--smtp-url", &mailbox.url(), "--public-url", &base].iter().map(|s| s.to_string()).collect();
        a.extend(["--smtp-retry-backoff", "300ms", "--campaign-partitions", "4"].iter().map(|s| s.to_string()));
        a
    };
    let mut serve = common("serve");
    serve.extend(["--port".into(), port.to_string()]);
    case.spawn(&serve, "campaigns-serve");
    for i in 0..workers {
        case.spawn(&common("send"), &format!("campaigns-send-{i}"));
    }
    let http = reqwest::Client::new();
    wait_for(Duration::from_secs(90), "funnel campaigns serve", || async { matches!(http.get(format!("{base}/health")).send().await, Ok(r) if r.status() == 200) }).await;
    Campaigns { base, mailbox, ns }
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

async fn create(case: &Case, c: &Campaigns, body: Json) -> String {
    let r = case.http().post(format!("{}/api/v1/campaigns", c.base)).json(&body).send().await.unwrap();
    let status = r.status().as_u16();
    let v: Json = r.json().await.unwrap();
    assert_eq!(status, 201, "create: {v}");
    v["id"].as_str().unwrap().to_string()
}

async fn status(case: &Case, c: &Campaigns, id: &str) -> Json {
    case.http().get(format!("{}/api/v1/campaigns/{id}/status", c.base)).send().await.unwrap().json().await.unwrap()
}

async fn wait_state(case: &Case, c: &Campaigns, id: &str, state: &str, timeout: Duration) -> Json {
    let mut last = Json::Null;
    let t0 = std::time::Instant::now();
    while t0.elapsed() < timeout {
        last = status(case, c, id).await;
        if last["state"] == state {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("campaign {id} not {state} within {timeout:?}: {last}\nserve log:\n{}", case.log("campaigns-serve"));
}

fn per_recipient(mails: &[common::mailbox::Mail]) -> HashMap<String, usize> {
    let mut n = HashMap::new();
    for m in mails {
        *n.entry(m.to.clone()).or_default() += 1;
    }
    n
}

fn listed(n: usize) -> Vec<Json> {
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

fn campaign_body(name: &str, recipients: Vec<Json>, batch_size: i64) -> Json {
    json!({
        "name": name, "sender": "Shop <news@shop.example>",
        "subject": "Hello {{ first_name }}", "batch_size": batch_size,
        "text": "Dear {{ first_name }} from {{ city }}, see {{ track(\"https://shop.example/sale\") }}",
        "html": "<html><body><p>Dear {{ first_name }} from {{ city }}</p><a href=\"{{ track('https://shop.example/sale') }}\">sale</a> <a href=\"{{ track('https://shop.example/new') }}\">new</a></body></html>",
        "audience": {"recipients": recipients}, "scheduled_at": now_rfc3339(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listed_campaign_mails_each_recipient_once_retries_4xx_and_suppresses_5xx() {
    let mut case = Case::new("cmplist").await;
    let c = start(&mut case, 2).await;
    let people = listed(240);
    let id = create(&case, &c, campaign_body("Spring", people.clone(), 50)).await;
    let s = wait_state(&case, &c, &id, "finished", Duration::from_secs(180)).await;
    let r = &s["recipients"];
    assert_eq!(
        (r["requested"].as_i64(), r["sent"].as_i64(), r["bounced"].as_i64(), r["failed"].as_i64(), r["retrying"].as_i64(), r["pending"].as_i64()),
        (Some(247), Some(243), Some(3), Some(1), Some(0), Some(0)),
        "{s}"
    );
    let mails = c.mailbox.mails();
    let n = per_recipient(&mails);
    assert_eq!(mails.len(), 243, "one mail per deliverable recipient");
    for p in &people {
        let e = p["email"].as_str().unwrap();
        let want = if e.starts_with("bounce-") || e.starts_with("nameless") { 0 } else { 1 };
        assert_eq!(n.get(e).copied().unwrap_or(0), want, "mails to {e}");
    }
    // Personalised field by field, escaped in HTML only, with the tracking and list headers.
    for i in [0usize, 5, 17, 239] {
        let p = &people[i];
        let m = mails.iter().find(|m| m.to == p["email"].as_str().unwrap()).unwrap();
        let (first, city) = (p["first_name"].as_str().unwrap(), p["city"].as_str().unwrap());
        assert_eq!(m.subject, format!("Hello {first}"));
        assert!(m.text.starts_with(&format!("Dear {first} from {city}, see {}/t/c/", c.base)), "{}", m.text);
        let escaped = first.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
        assert!(m.html.contains(&format!("<p>Dear {escaped} from {city}</p>")), "{}", m.html);
        assert!(m.html.contains(&format!("<img src=\"{}/t/o/", c.base)), "open pixel in {}", m.html);
        assert!(m.headers["message-id"].ends_with(&format!(".{id}@shop.example>")), "{:?}", m.headers["message-id"]);
        assert!(m.headers["list-unsubscribe"].starts_with(&format!("<{}/u/", c.base)), "{:?}", m.headers);
        assert_eq!(m.headers["list-unsubscribe-post"], "List-Unsubscribe=One-Click");
    }
    // Message-IDs are unique per recipient.
    let ids: std::collections::HashSet<&String> = mails.iter().map(|m| &m.headers["message-id"]).collect();
    assert_eq!(ids.len(), mails.len());

    // A second campaign to the same list skips the bounced addresses (suppressed), mails the rest.
    let again = create(&case, &c, campaign_body("Summer", people.clone(), 100)).await;
    let s = wait_state(&case, &c, &again, "finished", Duration::from_secs(180)).await;
    let r = &s["recipients"];
    assert_eq!((r["sent"].as_i64(), r["suppressed"].as_i64(), r["bounced"].as_i64(), r["failed"].as_i64()), (Some(243), Some(3), Some(0), Some(1)), "{s}");
    assert_eq!(c.mailbox.count(), 486);
    let _ = c.ns;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_campaign_input_gets_a_clear_4xx_and_changes_nothing() {
    let mut case = Case::new("cmpbad").await;
    let c = start(&mut case, 0).await;
    let http = case.http();
    let url = format!("{}/api/v1/campaigns", c.base);
    let ok = campaign_body("Ok", vec![json!({"email": "a@list.example", "first_name": "A", "city": "X"})], 10);
    let with = |k: &str, v: Json| {
        let mut b = ok.clone();
        b[k] = v;
        b
    };
    let cases: Vec<(Json, u16, &str)> = vec![
        (with("subject", json!("Hi {{ shoe_size }}")), 422, "field shoe_size"),
        (with("audience", json!({"recipients": [{"email": "not-an-address"}]})), 422, "audience.recipients[0].email"),
        (with("scheduled_at", json!("2020-01-01T00:00:00Z")), 422, "in the past"),
        (with("sender", json!("nobody")), 422, "sender"),
        (with("audience", json!({"c360": {"segment": ["vip"]}})), 422, "unknown value \"vip\""),
        (with("html", json!("<p>{% if %}</p>")), 422, "html:"),
    ];
    for (body, code, needle) in cases {
        let m = json_error(http.post(&url).json(&body).send().await.unwrap(), code, needle).await;
        assert!(m.contains(needle), "{needle:?} not in {m:?}");
    }
    let raw = http.post(&url).header("content-type", "application/json").body("{\"name\": ").send().await.unwrap();
    json_error(raw, 400, "malformed JSON").await;
    let unknown_field = http.post(&url).json(&with("colour", json!("red"))).send().await.unwrap();
    assert!(json_error(unknown_field, 422, "unknown field").await.contains("colour"));
    // Wrong or missing credentials, on every API route.
    let anon = reqwest::Client::new();
    for (m, p) in [("GET", "/api/v1/campaigns"), ("POST", "/api/v1/campaigns"), ("GET", "/api/v1/campaigns/x"), ("GET", "/api/v1/campaigns/x/status"), ("POST", "/api/v1/campaigns/x/schedule"), ("POST", "/api/v1/campaigns/x/pause"), ("POST", "/api/v1/campaigns/x/resume"), ("POST", "/api/v1/campaigns/x/cancel"), ("POST", "/api/v1/campaigns/x/test")] {
        let r = anon.request(m.parse().unwrap(), format!("{}{p}", c.base)).basic_auth("funnel", Some("wrong-password-long-enough")).json(&ok).send().await.unwrap();
        let msg = json_error(r, 401, &format!("{m} {p}")).await;
        assert!(!msg.contains(&case.token));
    }
    // Unknown campaign ids.
    for (m, p) in [("GET", "x"), ("GET", "x/status"), ("POST", "x/pause"), ("POST", "x/cancel")] {
        json_error(http.request(m.parse().unwrap(), format!("{url}/{p}")).json(&json!({})).send().await.unwrap(), 404, "unknown id").await;
    }
    // Nothing was created by any of that.
    let list: Json = http.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(list["campaigns"], json!([]));
    // A draft: invalid transitions are 409, a past schedule 422, and it stays a draft.
    let mut draft = ok.clone();
    draft.as_object_mut().unwrap().remove("scheduled_at");
    let id = create(&case, &c, draft).await;
    json_error(http.post(format!("{url}/{id}/pause")).send().await.unwrap(), 409, "pause a draft").await;
    json_error(http.post(format!("{url}/{id}/schedule")).json(&json!({"scheduled_at": "2001-01-01T00:00:00Z"})).send().await.unwrap(), 422, "past").await;
    json_error(http.post(format!("{url}/{id}/schedule")).json(&json!({})).send().await.unwrap(), 422, "no time").await;
    json_error(http.post(format!("{url}/{id}/test")).json(&json!({"email": "nope"})).send().await.unwrap(), 422, "test to a bad address").await;
    let v: Json = http.get(format!("{url}/{id}")).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["state"], "draft", "{v}");
    // A test send renders with the given fields and goes out now.
    let r = http.post(format!("{url}/{id}/test")).json(&json!({"email": "qa@list.example", "fields": {"first_name": "Q", "city": "Y"}})).send().await.unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    wait_for(Duration::from_secs(10), "test mail", || async { c.mailbox.count() == 1 }).await;
    assert_eq!(c.mailbox.mails()[0].subject, "Hello Q");
    let missing = http.post(format!("{url}/{id}/test")).json(&json!({"email": "qa@list.example", "fields": {"city": "Y"}})).send().await.unwrap();
    assert!(json_error(missing, 422, "test without first_name").await.contains("missing field first_name"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opens_clicks_and_one_click_unsubscribes_are_counted_by_person_and_machine() {
    let mut case = Case::new("cmptrack").await;
    let c = start(&mut case, 1).await;
    let people: Vec<Json> = (1..=3).map(|i| json!({"email": format!("r{i}@list.example"), "first_name": format!("R{i}"), "city": "C"})).collect();
    let id = create(&case, &c, campaign_body("Tracked", people.clone(), 10)).await;
    wait_state(&case, &c, &id, "finished", Duration::from_secs(120)).await;
    // People do not open within 2 s of the send.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mails = c.mailbox.mails();
    let mail = |who: &str| mails.iter().find(|m| m.to == who).unwrap().clone();
    let link = |html: &str, marker: &str| -> String {
        let i = html.find(marker).unwrap();
        let rest = &html[i..];
        rest[..rest.find('"').unwrap()].to_string()
    };
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let get = |url: String, ua: Option<&'static str>| {
        let mut r = http.get(url);
        if let Some(ua) = ua {
            r = r.header("user-agent", ua);
        }
        r.send()
    };
    let (m1, m2, m3) = (mail("r1@list.example"), mail("r2@list.example"), mail("r3@list.example"));
    let pixel = |m: &common::mailbox::Mail| link(&m.html, &format!("{}/t/o/", c.base));
    let clicks = |m: &common::mailbox::Mail| -> Vec<String> { m.html.match_indices(&format!("{}/t/c/", c.base)).map(|(i, _)| link(&m.html[i..], "http")).collect() };
    // r1: a person opens twice and clicks once.
    for _ in 0..2 {
        let r = get(pixel(&m1), Some(FIREFOX)).await.unwrap();
        assert_eq!((r.status().as_u16(), r.headers()["content-type"].to_str().unwrap()), (200, "image/gif"));
    }
    let r = get(clicks(&m1)[0].clone(), Some(FIREFOX)).await.unwrap();
    assert_eq!((r.status().as_u16(), r.headers()["location"].to_str().unwrap()), (302, "https://shop.example/sale"));
    // r2: no user agent opens, then a scanner follows both links at once.
    get(pixel(&m2), None).await.unwrap();
    for u in clicks(&m2) {
        assert_eq!(get(u, Some("Mozilla/5.0 (compatible; Proofpoint URL Defense)")).await.unwrap().status(), 302);
    }
    // A forged or altered token is refused and counts nothing.
    let p = pixel(&m3);
    let forged = format!("{}{}", &p[..p.len() - 2], if p.ends_with("AA") { "BB" } else { "AA" });
    json_error(get(forged, Some(FIREFOX)).await.unwrap(), 403, "altered pixel token").await;
    let other = clicks(&m1)[0].replace("/t/c/", "/t/o/");
    json_error(get(other, Some(FIREFOX)).await.unwrap(), 403, "a click token used as an open").await;
    // r3: GET on the unsubscribe link changes nothing; the one-click POST unsubscribes.
    let unsub = m3.headers["list-unsubscribe"].trim_matches(['<', '>']).to_string();
    let page = get(unsub.clone(), Some(FIREFOX)).await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("method=post"));
    assert_eq!(status(&case, &c, &id).await["engagement"]["unsubscribes"], 0, "a GET must not unsubscribe");
    let post = http.post(&unsub).header("user-agent", FIREFOX).header("content-type", "application/x-www-form-urlencoded").body("List-Unsubscribe=One-Click").send().await.unwrap();
    assert_eq!(post.status(), 200, "RFC 8058: 200, no redirect");

    let want = json!({"opens": 3, "unique_opens": 2, "unique_human_opens": 1, "clicks": 3, "unique_clicks": 2, "unique_human_clicks": 1, "unsubscribes": 1});
    let s = status(&case, &c, &id).await;
    assert_eq!(s["engagement"], want, "{s}");
    // The same counts land in gold/campaign_stats.
    let sql = format!("SELECT opens, unique_opens, unique_human_opens, clicks, unique_clicks, unique_human_clicks, unsubscribes, sent FROM gold_campaign_stats WHERE campaign_id = '{id}'");
    wait_for(Duration::from_secs(60), "gold campaign_stats", || async {
        let out = case.run_ok(&["sql", "--format", "json", &sql]);
        json_lines(&out).first().is_some_and(|r| r["unsubscribes"] == 1 && r["clicks"] == 3 && r["opens"] == 3 && r["sent"] == 3)
    })
    .await;
    let out = case.run_ok(&["sql", "--format", "json", &sql]);
    let row = &json_lines(&out)[0];
    for (k, v) in want.as_object().unwrap() {
        assert_eq!(&row[k], v, "gold {k}: {row}");
    }
    // And in the metrics, by person and machine.
    let metrics = reqwest::get(format!("{}/metrics", c.base)).await.unwrap().text().await.unwrap();
    for line in [
        "campaign_engagement_total{automated=\"false\",kind=\"open\"} 2",
        "campaign_engagement_total{automated=\"true\",kind=\"open\"} 1",
        "campaign_engagement_total{automated=\"false\",kind=\"click\"} 1",
        "campaign_engagement_total{automated=\"true\",kind=\"click\"} 2",
        "campaign_engagement_total{automated=\"false\",kind=\"unsubscribe\"} 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} not in metrics:\n{}", metrics.lines().filter(|l| l.starts_with("campaign_")).collect::<Vec<_>>().join("\n"));
    }
    // The unsubscribed address is suppressed for the next campaign.
    let next = create(&case, &c, campaign_body("Next", people, 10)).await;
    let s = wait_state(&case, &c, &next, "finished", Duration::from_secs(120)).await;
    assert_eq!((s["recipients"]["sent"].as_i64(), s["recipients"]["suppressed"].as_i64()), (Some(2), Some(1)), "{s}");
}

//! Email campaigns against a real SMTP server (aiosmtpd, mail read back from its Maildir), the
//! broker, the registry and the lake: one mail per recipient, personalised and with the
//! one-click headers; 4xx retried, 5xx bounced and suppressed; bad input refused with nothing
//! written; opens, clicks and unsubscribes tracked with signed links and counted.

mod common;

use std::time::Duration;

use common::campaigns::*;
use common::*;
use serde_json::{json, Value as Json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listed_campaign_mails_each_recipient_once_retries_4xx_and_suppresses_5xx() {
    let mut case = Case::new("cmplist").await;
    let c = start(&mut case, 2, &[]).await;
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
    let c = start(&mut case, 0, &[]).await;
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
    let c = start(&mut case, 1, &[]).await;
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

fn at_in(ms: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::milliseconds(ms)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn ms(rfc3339: &Json) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339.as_str().unwrap()).unwrap().timestamp_millis()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_campaigns_start_on_time_across_a_restart_and_pause_resume_cancel_take_effect() {
    let mut case = Case::new("cmpsched").await;
    // 20 mails/s: a campaign of 200 takes about 10 s, long enough to pause and cancel it.
    let mut c = start(&mut case, 1, &["--rate-per-sender", "20"]).await;
    let http = case.http();
    let url = format!("{}/api/v1/campaigns", c.base);
    let people = |tag: &str, n: usize| -> Vec<Json> { (0..n).map(|i| json!({"email": format!("{tag}{i}@list.example"), "first_name": "F", "city": "C"})).collect() };

    // A due in 8 s; E due in 2 s but expiring after 1 s. The service is down from 1 s to 6 s.
    let mut a = campaign_body("A", people("a", 200), 10);
    a["scheduled_at"] = json!(at_in(8_000));
    let a = create(&case, &c, a).await;
    let mut e = campaign_body("E", people("e", 5), 10);
    e["scheduled_at"] = json!(at_in(2_000));
    e["expire_after_seconds"] = json!(1);
    let e = create(&case, &c, e).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    case.kill9(c.serve);
    tokio::time::sleep(Duration::from_millis(5000)).await;
    c.kill_serve(&mut case); // starts it again
    c.wait_healthy().await;
    let s = wait_state(&case, &c, &e, "failed", Duration::from_secs(30)).await;
    assert!(s["detail"].as_str().unwrap_or("").starts_with("expired"), "{s}");
    assert_eq!(s["recipients"]["requested"], 0, "an expired campaign sends nothing: {s}");

    wait_state(&case, &c, &a, "running", Duration::from_secs(30)).await;
    let shown: Json = http.get(format!("{url}/{a}")).send().await.unwrap().json().await.unwrap();
    let late = ms(&shown["started_at"]) - ms(&shown["scheduled_at"]);
    eprintln!("campaign A started {late} ms after its time (the service restarted in between)");
    assert!((0..5_000).contains(&late), "started within 5 s of its time: {shown}");

    // Pause: sending stops within a batch (10).
    wait_for(Duration::from_secs(30), "first mails of A", || async { c.mailbox.count() >= 30 }).await;
    assert_eq!(http.post(format!("{url}/{a}/pause")).send().await.unwrap().status(), 200);
    let at_pause = c.mailbox.count();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = c.mailbox.count();
    eprintln!("paused at {at_pause} mails, {after} after 3 s");
    assert!(after - at_pause <= 10, "at most one batch after the pause: {at_pause} → {after}");
    assert_eq!(status(&case, &c, &a).await["state"], "paused");
    // Resume continues where it stopped: every recipient once.
    assert_eq!(http.post(format!("{url}/{a}/resume")).send().await.unwrap().status(), 200);
    let s = wait_state(&case, &c, &a, "finished", Duration::from_secs(120)).await;
    assert_eq!(s["recipients"]["sent"], 200, "{s}");
    let n = per_recipient(&c.mailbox.mails());
    assert_eq!((n.len(), n.values().max().copied()), (200, Some(1)), "each of A's recipients exactly once");

    // Cancel ends a running campaign: the rest is recorded cancelled, nothing more is sent.
    let b = create(&case, &c, campaign_body("B", people("b", 200), 10)).await;
    wait_for(Duration::from_secs(30), "first mails of B", || async { c.mailbox.count() >= 220 }).await;
    assert_eq!(http.post(format!("{url}/{b}/cancel")).send().await.unwrap().status(), 200);
    let at_cancel = c.mailbox.count();
    json_error(http.post(format!("{url}/{b}/resume")).send().await.unwrap(), 409, "resume a cancelled campaign").await;
    wait_for(Duration::from_secs(30), "B's requests all recorded", || async {
        let s = status(&case, &c, &b).await;
        s["recipients"]["pending"] == 0
    })
    .await;
    let s = status(&case, &c, &b).await;
    let sent = c.mailbox.count() - 200;
    assert!(sent <= at_cancel - 200 + 10, "at most one batch after the cancel: {at_cancel} → {}", c.mailbox.count());
    assert_eq!(s["state"], "cancelled");
    assert_eq!((s["recipients"]["sent"].as_u64(), s["recipients"]["cancelled"].as_u64()), (Some(sent as u64), Some(200 - sent as u64)), "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_submits_campaigns_from_files_and_prints_their_status() {
    let mut case = Case::new("cmpcli").await;
    let c = start(&mut case, 1, &[]).await;
    let dir = case.lake.path();
    std::fs::write(dir.join("template.json"), r#"{"name": "CLI", "sender": "Shop <news@shop.example>", "subject": "Hi {{ first_name }}", "text": "{{ first_name }}, {{ city }}"}"#).unwrap();
    std::fs::write(dir.join("people.csv"), "email,first_name,city\nana@list.example,Ana,Recife\nbia@list.example,Bia,Natal\ncid@list.example,Cid,Belém\n").unwrap();
    let out = case.run_ok(&["campaigns", "submit", "--url", &c.base, "--template", dir.join("template.json").to_str().unwrap(), "--recipients", dir.join("people.csv").to_str().unwrap(), "--count", "2"]);
    let ids: Vec<String> = out.split_whitespace().filter(|w| w.starts_with("cmp-")).map(str::to_string).collect();
    assert_eq!(ids.len(), 2, "{out}");
    assert!(out.contains("CLI #1") && out.contains("CLI #2"), "{out}");
    for id in &ids {
        wait_state(&case, &c, id, "finished", Duration::from_secs(60)).await;
        let out = case.run_ok(&["campaigns", "status", "--url", &c.base, id]);
        assert!(out.contains(&format!("campaign {id} (CLI #")) && out.contains("): finished"), "{out}");
        let sent = out.lines().find(|l| l.contains(" sent ")).unwrap_or_default();
        assert!(sent.split('┆').nth(1).is_some_and(|n| n.trim() == "3"), "3 sent: {out}");
    }
    let n = per_recipient(&c.mailbox.mails());
    assert_eq!(n, [("ana@list.example", 2), ("bia@list.example", 2), ("cid@list.example", 2)].into_iter().map(|(k, v)| (k.to_string(), v)).collect());
    // A CSV without an email column is refused before anything is sent.
    std::fs::write(dir.join("bad.csv"), "mail,first_name\nx@list.example,X\n").unwrap();
    let bad = case.funnel().args(["campaigns", "submit", "--url", &c.base, "--template", dir.join("template.json").to_str().unwrap(), "--recipients", dir.join("bad.csv").to_str().unwrap()]).output().unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no `email` column"), "{}", String::from_utf8_lossy(&bad.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_smtp_outage_makes_the_workers_wait_and_report_it_and_fails_no_mail() {
    let mut case = Case::new("cmpoutage").await;
    let health_port = free_port();
    let mut c = start(&mut case, 1, &["--http-port", &health_port.to_string()]).await;
    let health = format!("http://127.0.0.1:{health_port}/health");
    // A debug worker on a loaded machine (a heavy test beside it) takes a while to start.
    wait_for(Duration::from_secs(120), "worker /health", || async { reqwest::get(&health).await.is_ok() }).await;
    c.mailbox.stop();
    let people: Vec<Json> = (0..50).map(|i| json!({"email": format!("o{i}@list.example"), "first_name": "O", "city": "C"})).collect();
    let id = create(&case, &c, campaign_body("Outage", people, 10)).await;
    // The worker reports the outage on /health and records nothing as failed.
    wait_for(Duration::from_secs(60), "worker unhealthy while SMTP is down", || async {
        match reqwest::get(&health).await {
            Ok(r) if r.status() == 503 => r.text().await.unwrap_or_default().contains("smtp"),
            _ => false,
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let s = status(&case, &c, &id).await;
    assert_eq!((s["state"].as_str(), s["recipients"]["sent"].as_i64(), s["recipients"]["failed"].as_i64(), s["recipients"]["pending"].as_i64()), (Some("running"), Some(0), Some(0), Some(50)), "{s}");
    // Back: everything is delivered, once, and the worker is healthy again.
    c.mailbox.restart().await;
    let s = wait_state(&case, &c, &id, "finished", Duration::from_secs(120)).await;
    assert_eq!((s["recipients"]["sent"].as_i64(), s["recipients"]["failed"].as_i64()), (Some(50), Some(0)), "{s}");
    let n = per_recipient(&c.mailbox.mails());
    assert_eq!((n.len(), n.values().max().copied()), (50, Some(1)));
    wait_for(Duration::from_secs(30), "worker healthy again", || async { matches!(reqwest::get(&health).await, Ok(r) if r.status() == 200) }).await;
    let metrics = reqwest::get(format!("http://127.0.0.1:{health_port}/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.lines().any(|l| l.starts_with("campaign_processor_healthy{") && l.ends_with(" 1")), "{metrics}");
    assert!(metrics.lines().any(|l| l == "campaigns_processed_total{status=\"sent\"} 50"), "{}", metrics.lines().filter(|l| l.starts_with("campaign")).collect::<Vec<_>>().join("\n"));
}

/// A campaign to a customer-360 segment of the olist people in batches of 100: exactly one
/// personalised mail per person of the segment. Then three of them unsubscribe, and a second
/// campaign to the same segment runs while its two sender workers and the service are killed
/// (-9) six times: nobody is skipped, the unsubscribed get nothing, duplicates are counted
/// (only mails in flight at a kill may be sent twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn campaign_to_a_c360_segment_mails_each_person_once_and_skips_nobody_across_kill_9() {
    let mut case = Case::new("cmpc360").await;
    let case = &mut case;
    // The olist database (synthetic, 8 000 orders), CDC → domain → c360 → gold c360.
    case.run_ok(&["seed", "olist", "--synthetic-scale", "8"]);
    // 40 people without an address: counted skipped with the reason, never silently dropped.
    let pg = case.pg().await;
    pg.batch_execute("UPDATE ecommerce.customers SET customer_email = NULL WHERE customer_unique_id IN (SELECT DISTINCT customer_unique_id FROM ecommerce.customers ORDER BY 1 LIMIT 40)").await.unwrap();
    let mut cdc = case.cdc_args();
    cdc.extend(["--cdc-tables".to_string(), "ecommerce.customers,ecommerce.orders,ecommerce.order_items,ecommerce.order_payments,ecommerce.products,ecommerce.order_reviews".to_string()]);
    case.spawn(&cdc, "cdc");
    let pipeline: Vec<String> = ["run", "domain", "c360", "lake", "--http-port", "0", "--namespace", &case.prefix, "--cdc-topic-prefix", &case.prefix].iter().map(|s| s.to_string()).collect();
    case.spawn(&pipeline, "c360");
    let persons: i64 = pg.query_one("SELECT count(DISTINCT customer_unique_id) FROM ecommerce.customers", &[]).await.unwrap().get(0);
    let t0 = std::time::Instant::now();
    // Every person with their orders *and* their profile: orders and profiles reach c360 from
    // different CDC tables, so a person can be in gold with orders but still without the
    // address that the campaign will find a few seconds later (CI saw 884 such, not 30). The
    // addresses are exact: every person but the 40 has one. Then the counts must hold still
    // across two reads, so the segment read below is the one the campaign will expand.
    let last = std::sync::Mutex::new(None::<Json>);
    wait_for(Duration::from_secs(900), "every person and address in gold c360, settled", || async {
        if !case.lake.path().join("gold/c360/_delta_log").is_dir() {
            return false;
        }
        let out = case.run_ok(&["sql", "--format", "json", "SELECT count(*) FILTER (WHERE order_count > 0) AS n, count(email) AS addressed, sum(order_count) AS orders, sum(revenue) AS revenue FROM gold_c360"]);
        let Some(now) = json_lines(&out).first().cloned() else { return false };
        let complete = now["n"].as_i64() == Some(persons) && now["addressed"].as_i64() == Some(persons - 40);
        let settled = last.lock().unwrap().replace(now.clone()).as_ref() == Some(&now);
        complete && settled
    })
    .await;
    eprintln!("{persons} persons in gold c360 after {:.0} s", t0.elapsed().as_secs_f64());
    // The largest segment is the audience.
    let sizes = json_lines(&case.run_ok(&["sql", "--format", "json", "SELECT segment, count(*) AS n FROM gold_c360 GROUP BY segment ORDER BY n DESC, segment"]));
    let segment = sizes[0]["segment"].as_str().unwrap().to_string();
    let segment = segment.as_str();
    let sql = format!("SELECT customer_id, email, city, order_count FROM gold_c360 WHERE segment = '{segment}' ORDER BY customer_id");
    let everyone = json_lines(&case.run_ok(&["sql", "--format", "json", &sql]));
    let (people, without): (Vec<Json>, Vec<Json>) = everyone.iter().cloned().partition(|p| p["email"].is_string());
    eprintln!("segment {segment}: {} people in gold c360, {} of them without an address", everyone.len(), without.len());
    assert!(people.len() >= 1000, "thousands of recipients: {}", people.len());
    assert!(!without.is_empty(), "some of the 40 people without an address are in the segment");
    assert!(people.iter().all(|p| p["email"].as_str().is_some_and(|e| e.ends_with("@customers.example"))), "seeded addresses are under the reserved domain");
    let by_email: std::collections::HashMap<String, &Json> = people.iter().map(|p| (p["email"].as_str().unwrap().to_string(), p)).collect();
    let concurrency = 8;
    let mut c = start(case, 2, &["--rate-per-sender", "150", "--smtp-concurrency", &concurrency.to_string()]).await;
    let body = |name: &str| {
        serde_json::json!({
            "name": name, "sender": "Olist <news@olist.example>", "batch_size": 100,
            "subject": "{{ order_count }} orders, {{ city }}",
            "text": "Hello {{ customer_id }} ({{ segment }}) from {{ city }}",
            "html": "<p>Hello {{ customer_id }} from {{ city }}</p>",
            "audience": {"c360": {"segment": [segment]}}, "scheduled_at": now_rfc3339(),
        })
    };
    let of = |mails: &[common::mailbox::Mail], id: &str| -> Vec<common::mailbox::Mail> { mails.iter().filter(|m| m.headers.get("x-funnel-campaign").map(String::as_str) == Some(id)).cloned().collect() };

    let t0 = std::time::Instant::now();
    let first = create(case, &c, body(&format!("Segment {segment}"))).await;
    let s = wait_state(case, &c, &first, "finished", Duration::from_secs(600)).await;
    eprintln!("campaign to {} people finished in {:.0} s: {s}", people.len(), t0.elapsed().as_secs_f64());
    let r = &s["recipients"];
    assert_eq!((r["requested"].as_u64(), r["sent"].as_u64(), r["skipped"].as_u64()), (Some(everyone.len() as u64), Some(people.len() as u64), Some(without.len() as u64)), "{s}");
    let mails = of(&c.mailbox.mails(), &first);
    let n = per_recipient(&mails);
    assert_eq!((mails.len(), n.len()), (people.len(), people.len()), "exactly one mail per person of the segment");
    for m in mails.iter().step_by(97) {
        let p = by_email.get(&m.to).unwrap_or_else(|| panic!("{} is not in the segment", m.to));
        assert_eq!(m.subject, format!("{} orders, {}", p["order_count"], p["city"].as_str().unwrap()));
        assert_eq!(m.text, format!("Hello {} ({segment}) from {}", p["customer_id"].as_str().unwrap(), p["city"].as_str().unwrap()));
        for h in ["message-id", "list-unsubscribe", "list-unsubscribe-post", "list-id"] {
            assert!(m.headers.contains_key(h), "{h} missing: {:?}", m.headers);
        }
    }
    // Three people unsubscribe with the one-click POST of their mail.
    let gone: Vec<&common::mailbox::Mail> = mails.iter().take(3).collect();
    for m in &gone {
        let u = m.headers["list-unsubscribe"].trim_matches(['<', '>']).to_string();
        let r = reqwest::Client::new().post(&u).header("user-agent", FIREFOX).body("List-Unsubscribe=One-Click").send().await.unwrap();
        assert_eq!(r.status(), 200);
    }

    let second = create(case, &c, body(&format!("Segment {segment}, again"))).await;
    let (mut worker_kills, mut serve_kills) = (0, 0);
    for k in 0..6 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        match k % 3 {
            0 | 1 => {
                c.kill_worker(case, k % 2);
                worker_kills += 1;
            }
            _ => {
                c.kill_serve(case);
                serve_kills += 1;
            }
        }
    }
    c.wait_healthy().await;
    let s = wait_state(case, &c, &second, "finished", Duration::from_secs(600)).await;
    let mails = of(&c.mailbox.mails(), &second);
    let n = per_recipient(&mails);
    let missing: Vec<&String> = by_email.keys().filter(|e| !n.contains_key(*e) && !gone.iter().any(|g| &g.to == *e)).collect();
    let duplicates = mails.len() - n.len();
    eprintln!("second campaign with {worker_kills} worker and {serve_kills} service kill -9: {} mails to {} people, {duplicates} duplicates, {} missing; {s}", mails.len(), n.len(), missing.len());
    assert!(missing.is_empty(), "nobody skipped: {missing:?}");
    assert!(gone.iter().all(|g| !n.contains_key(&g.to)), "the unsubscribed got nothing");
    assert_eq!((s["recipients"]["sent"].as_u64(), s["recipients"]["suppressed"].as_u64(), s["recipients"]["skipped"].as_u64()), (Some(people.len() as u64 - 3), Some(3), Some(without.len() as u64)), "{s}");
    assert!(duplicates <= worker_kills * concurrency, "duplicates only for mails in flight at a kill ({duplicates} > {worker_kills} kills × {concurrency} in flight)");
}

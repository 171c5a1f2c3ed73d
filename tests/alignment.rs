//! Event-time alignment (`runtime::align`) on c360: orders produced before their customers'
//! profiles, every record stamped with its event time (a profile: signup in 2017; an order:
//! purchase in 2018). Whatever order the topics arrive in, every enriched order carries the
//! profile that precedes it in event time; the live run from that backlog, `funnel replay
//! c360` and a replay with one input partition throttled (`FUNNEL_THROTTLE`) give the same
//! digests. Without alignment (`--c360-align-idle-ms 0`) the throttled replay leaves orders
//! without their profile.

mod common;

use common::*;
use serde_json::Value as Json;

const ORDERS: i64 = 3000;

fn n(r: &Json, k: &str) -> i64 {
    r.get(k).and_then(Json::as_i64).unwrap_or(-1)
}

/// (topic, digest) rows of a `funnel digest` / `funnel replay` table.
fn digests(out: &str) -> Vec<(String, String)> {
    out.lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split(['│', '┆']).map(str::trim).filter(|c| !c.is_empty()).collect();
            (cells.len() == 5 && cells[0].contains(".v1")).then(|| (cells[0].to_string(), cells[4].to_string()))
        })
        .collect()
}

fn enriched(case: &Case) -> Json {
    case.check_with("c360", &["enriched"], &["--namespace", &case.prefix]).remove(0)
}

fn assert_every_order_carries_its_profile(e: &Json, run: &str) {
    assert_eq!(n(e, "records"), ORDERS, "{run}: one enriched record per order: {e}");
    assert_eq!(n(e, "duplicates"), 0, "{run}: {e}");
    assert_eq!(n(e, "profile_preceded"), ORDERS, "{run}: every profile precedes its orders in event time: {e}");
    assert_eq!(n(e, "profile_not_carried"), 0, "{run}: {e}");
    assert_eq!(n(e, "with_profile"), ORDERS, "{run}: {e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enriched_orders_carry_the_profile_preceding_them_in_event_time_whatever_the_arrival_order() {
    let mut case = Case::new("align").await;
    let ns = case.prefix.clone();
    let out = case.run_ok(&["seed", "events", "--customers", "500", "--orders", &ORDERS.to_string(), "--orders-before-profile", "0.7", "--stamp-event-time", "--namespace", &ns]);
    assert!(out.contains("produced 500 profiles"), "{out}");
    let c360 = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = ["--namespace", &ns, "--redis-prefix", &ns].iter().map(|s| s.to_string()).collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };

    // Live: c360 running, from the backlog.
    let mut args = vec!["run".to_string(), "c360".into(), "--http-port".into(), "0".into()];
    args.extend(c360(&[]));
    let live = case.spawn(&args, "c360");
    wait_for(std::time::Duration::from_secs(300), "every order enriched", || async { n(&enriched(&case), "records") >= ORDERS }).await;
    // Wait for the consolidated records to stand still before taking the digests.
    let mut before = String::new();
    let live_digests = loop {
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        let mut a = vec!["digest", "c360"];
        let extra = c360(&[]);
        a.extend(extra[..2].iter().map(String::as_str));
        let out = case.run_ok(&a);
        if out == before {
            break digests(&out);
        }
        before = out;
    };
    case.kill9(live);
    let e = enriched(&case);
    eprintln!("live: {e}\n{live_digests:?}");
    assert_every_order_carries_its_profile(&e, "live");
    assert_eq!(live_digests.len(), 3, "{before}");

    // The replay reads the same topics as fast as they come: the same records.
    let replay = |extra: &[&str], env: &[(&str, &str)]| {
        let mut a: Vec<String> = vec!["replay".into(), "c360".into()];
        a.extend(c360(extra));
        case.run_ok_env(&a.iter().map(String::as_str).collect::<Vec<_>>(), env)
    };
    let out = replay(&[], &[]);
    let e = enriched(&case);
    eprintln!("replay: {e}\n{out}");
    assert_every_order_carries_its_profile(&e, "replay");
    assert_eq!(digests(&out), live_digests, "replay equals the live run, per key:\n{out}");

    // One profile partition throttled to 50 records a second (FUNNEL_THROTTLE): it runs
    // seconds behind the other inputs, and alignment waits for it.
    let throttled = format!("{ns}.dom.customer.profile.upsert.v1/1=50");
    let t0 = std::time::Instant::now();
    let out = replay(&[], &[("FUNNEL_THROTTLE", &throttled)]);
    let e = enriched(&case);
    eprintln!("replay with {throttled} ({:.1} s): {e}\n{out}", t0.elapsed().as_secs_f64());
    assert_every_order_carries_its_profile(&e, "throttled replay");
    assert_eq!(digests(&out), live_digests, "a throttled partition changes nothing:\n{out}");

    // Without alignment the records go in the order they are fetched: with the throttled
    // partition, orders go ahead of the profiles they follow in event time (the checks
    // above can fail).
    replay(&["--c360-align-idle-ms", "0"], &[("FUNNEL_THROTTLE", &throttled)]);
    let e = enriched(&case);
    eprintln!("throttled replay without alignment: {e}");
    assert!(n(&e, "profile_not_carried") > 0, "without alignment some orders miss their profile: {e}");
}

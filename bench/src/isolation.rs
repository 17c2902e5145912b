//! One tenant's schema change against another tenant's writes (`--isolation N`): tenant A's type
//! holds N objects; tenant B creates objects of its own type without pause, four at a time;
//! midway, A changes its type (`--change`): makes `qty` sortable (an index over its N objects),
//! makes `name` unique (a unique index), or adds a required property with a default (every
//! object filled). B's create latency is reported before the change and while it is under way
//! (from A's request until the property's indexes are ready), with A's request's own latency
//! and the time to the ready index.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::{bench_tenant, call, percentile, pocketbase, Options};

/// Writers of tenant B.
const WRITERS: usize = 4;
/// How long B writes before the change, and after it is done.
const CALM: Duration = Duration::from_secs(3);

pub(crate) async fn run(client: &reqwest::Client, base: &str, key: &str, options: &Options) -> anyhow::Result<()> {
    let post = reqwest::Method::POST;
    // Tenant A: the bench's own, `qty` not indexed yet.
    call(client, post.clone(), format!("{base}/v1/object-types"), key, json!({ "name": "items" })).await?;
    for property in [
        json!({ "name": "name", "data_type": "string" }),
        json!({ "name": "qty", "data_type": "integer" }),
        json!({ "name": "price", "data_type": "decimal" }),
        json!({ "name": "notes", "data_type": "text" }),
    ] {
        call(client, post.clone(), format!("{base}/v1/object-types/items/properties"), key, property).await?;
    }
    let started = Instant::now();
    let (load_base, load_key) = (base.to_string(), key.to_string());
    pocketbase::load(client, options.isolation, move |batch| {
        let objects: Vec<Value> = batch.map(pocketbase::object).collect();
        (format!("{load_base}/v1/objects/items/batch/create"), load_key.clone(), json!({ "objects": objects }))
    })
    .await?;
    println!("tenant A: {} objects loaded in {:.1} s", options.isolation, started.elapsed().as_secs_f64());

    // Tenant B: a tenant of its own, with a key allowed far more than it sends.
    let other_key = bench_tenant(client, base, "Other").await?.key;
    call(client, post.clone(), format!("{base}/v1/object-types"), &other_key, json!({ "name": "notes" })).await?;
    let property = json!({ "name": "title", "data_type": "string" });
    call(client, post.clone(), format!("{base}/v1/object-types/notes/properties"), &other_key, property).await?;

    // B writes from now until told to stop, each answer stamped with when it was sent.
    let stop = Arc::new(AtomicBool::new(false));
    let epoch = Instant::now();
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (client, stop, url, key) =
            (client.clone(), stop.clone(), format!("{base}/v1/objects/notes"), other_key.clone());
        writers.push(tokio::spawn(async move {
            let mut samples: Vec<(Duration, Duration, bool)> = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let sent = epoch.elapsed();
                let body = json!({ "properties": { "title": format!("note {w}-{n}") } });
                let ok =
                    client.post(&url).bearer_auth(&key).json(&body).send().await.is_ok_and(|r| r.status().is_success());
                samples.push((sent, epoch.elapsed() - sent, ok));
                n += 1;
            }
            samples
        }));
    }
    tokio::time::sleep(CALM).await;

    // A's change, then its index's progress.
    let (method, path, body) = match options.change.as_str() {
        "unique" => (reqwest::Method::PATCH, "properties/name", json!({ "is_unique": true })),
        "required" => (
            post.clone(),
            "properties",
            json!({ "name": "rank", "data_type": "integer", "is_required": true, "default_value": 0 }),
        ),
        _ => (reqwest::Method::PATCH, "properties/qty", json!({ "is_sortable": true })),
    };
    let change_started = epoch.elapsed();
    let changed = client
        .request(method, format!("{base}/v1/object-types/items/{path}"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await?;
    let answered = epoch.elapsed();
    anyhow::ensure!(changed.status().is_success(), "the property change failed: {}", changed.text().await?);
    let changed: Value = changed.json().await?;
    let name = changed["data"]["name"].as_str().unwrap_or_default().to_string();
    // Done once its indexes are built and its objects filled.
    let settled = |property: &Value| {
        let index = property["index_status"].as_str().unwrap_or("ready (built in the request)").to_string();
        let fill = property["fill_status"].as_str().unwrap_or("done").to_string();
        (index != "building" && fill != "filling", format!("indexes {index}, fill {fill}"))
    };
    let (mut done, mut status) = settled(&changed["data"]);
    while !done {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let property = call(
            client,
            reqwest::Method::GET,
            format!("{base}/v1/object-types/items/properties/{name}"),
            key,
            Value::Null,
        )
        .await?;
        (done, status) = settled(&property["data"]);
    }
    let ready = epoch.elapsed();
    tokio::time::sleep(CALM).await;
    stop.store(true, Ordering::Relaxed);
    let mut samples = Vec::new();
    for writer in writers {
        samples.extend(writer.await?);
    }

    let backend = if options.database_url.is_some() { "postgres" } else { "sqlite" };
    println!(
        "plinth {backend}: tenant A's change `{}` ({body}) over {} objects; tenant B creates, {WRITERS} at a time",
        options.change, options.isolation
    );
    println!(
        "A's request answered in {:.1} ms; {status} {:.1} ms after the request was sent",
        (answered - change_started).as_secs_f64() * 1e3,
        (ready - change_started).as_secs_f64() * 1e3
    );
    // Before: answered before the change was sent. Under way: answered after it was sent and
    // sent before the index was ready. After: sent once it was.
    let window = |keep: &dyn Fn(Duration, Duration) -> bool| -> (Vec<Duration>, usize) {
        let chosen: Vec<&(Duration, Duration, bool)> =
            samples.iter().filter(|(sent, took, _)| keep(*sent, *took)).collect();
        let mut latencies: Vec<Duration> = chosen.iter().map(|(_, took, _)| *took).collect();
        latencies.sort();
        (latencies, chosen.iter().filter(|(_, _, ok)| !ok).count())
    };
    println!(
        "{:<36} {:>9} {:>10} {:>10} {:>10} {:>7}",
        "tenant B's creates", "requests", "median", "p99", "max", "failed"
    );
    for (name, (latencies, failed)) in [
        ("before the change", window(&|sent, took| sent + took < change_started)),
        ("while it is under way", window(&|sent, took| sent + took >= change_started && sent <= ready)),
        ("after", window(&|sent, _| sent > ready)),
    ] {
        println!(
            "{name:<36} {:>9} {:>8.2}ms {:>8.2}ms {:>8.2}ms {failed:>7}",
            latencies.len(),
            percentile(&latencies, 0.5).as_secs_f64() * 1e3,
            percentile(&latencies, 0.99).as_secs_f64() * 1e3,
            latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        );
    }
    Ok(())
}

//! The data store's heavier capabilities (`--data N`): N deals loaded by 10,000-row imports
//! (each timed; the last one as a job, timed to its end), a list page embedding each deal's
//! company (`include`) beside the same page without it, a `GROUP BY` over the N deals through
//! `POST /v1/sql`, and exports of the N deals as JSON and CSV (timed from the request to the
//! file downloaded).

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::{call, drive, percentile, Options, Scenario};

const REGIONS: [&str; 8] = ["north", "south", "east", "west", "centre", "islands", "coast", "hills"];
const STAGES: [&str; 4] = ["lead", "qualified", "won", "lost"];
const COMPANIES: usize = 200;
/// Deals associated with a company: the first pages of the list, and many more.
const ASSOCIATED: usize = 2_000;
const IMPORT_ROWS: usize = 10_000;

fn deal(i: usize) -> Value {
    json!({
        "title": format!("deal {i}"),
        "region": REGIONS[i % REGIONS.len()],
        "stage": STAGES[(i / 7) % STAGES.len()],
        "amount": (i * 37) % 10_000,
    })
}

async fn define(client: &reqwest::Client, base: &str, key: &str) -> anyhow::Result<()> {
    let post = reqwest::Method::POST;
    for (name, properties) in [
        (
            "companies",
            vec![json!({ "name": "name", "data_type": "string" }), json!({ "name": "region", "data_type": "string" })],
        ),
        (
            "deals",
            vec![
                json!({ "name": "title", "data_type": "string" }),
                json!({ "name": "region", "data_type": "string", "is_indexed": true }),
                json!({ "name": "stage", "data_type": "enum", "enum_values": STAGES }),
                json!({ "name": "amount", "data_type": "integer" }),
            ],
        ),
    ] {
        call(client, post.clone(), format!("{base}/v1/object-types"), key, json!({ "name": name })).await?;
        for property in properties {
            call(client, post.clone(), format!("{base}/v1/object-types/{name}/properties"), key, property).await?;
        }
    }
    Ok(())
}

/// Polls `path` until its `status` is `done`; the time it took from `since`.
async fn until_done(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    since: Instant,
) -> anyhow::Result<(Duration, Value)> {
    loop {
        let got: Value = client.get(url).bearer_auth(key).send().await?.json().await?;
        match got["data"]["status"].as_str() {
            Some("done") => return Ok((since.elapsed(), got["data"].clone())),
            Some("failed") => bail!("{url} failed: {got}"),
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// The ids of the first `n` deals, in id order.
async fn deal_ids(client: &reqwest::Client, base: &str, key: &str, n: usize) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    while ids.len() < n {
        let mut url = format!("{base}/v1/objects/deals/list?limit=100&sort=id");
        if let Some(cursor) = &cursor {
            url.push_str(&format!("&cursor={cursor}"));
        }
        let page: Value = client.get(url).bearer_auth(key).send().await?.json().await?;
        let results = page["data"]["results"].as_array().context("a page")?;
        ids.extend(results.iter().filter_map(|o| o["id"].as_str().map(str::to_string)));
        match page["data"]["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    ids.truncate(n);
    Ok(ids)
}

fn row(name: &str, figure: String) {
    println!("{name:<58} {figure}");
}

pub(crate) async fn run(client: &reqwest::Client, base: &str, key: &str, options: &Options) -> anyhow::Result<()> {
    let n = options.data;
    let post = reqwest::Method::POST;
    define(client, base, key).await?;
    println!("plinth data store: {n} deals, {COMPANIES} companies");

    // Imports of 10,000 rows, one at a time, the last one as a job.
    let imports = n.div_ceil(IMPORT_ROWS);
    let mut synchronous = Vec::new();
    let mut job = None;
    for batch in 0..imports {
        let rows: Vec<Value> = (batch * IMPORT_ROWS..((batch + 1) * IMPORT_ROWS).min(n)).map(deal).collect();
        let count = rows.len();
        let as_job = batch + 1 == imports && imports > 1;
        let body = json!({ "object_type_id": "deals", "data": rows, "async": as_job });
        let started = Instant::now();
        let answer = call(client, post.clone(), format!("{base}/v1/data/import"), key, body).await?;
        if as_job {
            let id = answer["data"]["import_id"].as_str().context("import id")?;
            let (took, done) = until_done(client, &format!("{base}/v1/data/import/{id}"), key, started).await?;
            if done["result"]["imported"].as_u64() != Some(count as u64) {
                bail!("the import job did not import every row: {done}");
            }
            job = Some((took, count));
        } else {
            if answer["data"]["imported"].as_u64() != Some(count as u64) {
                bail!("an import did not import every row: {answer}");
            }
            synchronous.push((started.elapsed(), count));
        }
    }
    synchronous.sort();
    if let Some((took, count)) = synchronous.get(synchronous.len() / 2) {
        row(
            &format!("import {count} rows, synchronous (median of {})", synchronous.len()),
            format!("{:.2} s, {:.0} rows/s", took.as_secs_f64(), *count as f64 / took.as_secs_f64()),
        );
    }
    if let Some((took, count)) = job {
        row(
            &format!("import {count} rows as a job, to its end"),
            format!("{:.2} s, {:.0} rows/s", took.as_secs_f64(), count as f64 / took.as_secs_f64()),
        );
    }

    // Companies, and the first deals associated with one each.
    let companies: Vec<Value> = (0..COMPANIES)
        .map(|i| json!({ "name": format!("company {i}"), "region": REGIONS[i % REGIONS.len()] }))
        .collect();
    call(
        client,
        post.clone(),
        format!("{base}/v1/data/import"),
        key,
        json!({ "object_type_id": "companies", "data": companies }),
    )
    .await?;
    let company_ids: Vec<String> = {
        let page: Value = client
            .get(format!("{base}/v1/objects/companies/list?limit=100"))
            .bearer_auth(key)
            .send()
            .await?
            .json()
            .await?;
        page["data"]["results"]
            .as_array()
            .context("companies")?
            .iter()
            .filter_map(|o| o["id"].as_str().map(str::to_string))
            .collect()
    };
    let deals = deal_ids(client, base, key, ASSOCIATED.min(n)).await?;
    let put = reqwest::Method::PUT;
    for chunk in deals.chunks(32).enumerate().map(|(c, ids)| (c * 32, ids)) {
        let (offset, ids) = chunk;
        let mut calls = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            let company = &company_ids[(offset + i) % company_ids.len()];
            let url = format!("{base}/v1/objects/deals/{id}/associations/company/companies/{company}");
            calls.push(call(client, put.clone(), url, key, json!({})));
        }
        for result in futures_util::future::join_all(calls).await {
            result?;
        }
    }

    // Lists and SQL, driven like the other scenarios.
    let sql = "SELECT region, COUNT(*) AS deals, SUM(amount) AS total, AVG(amount) AS average \
               FROM deals GROUP BY region ORDER BY region";
    let scenarios = [
        (
            Scenario {
                name: "GET deals list limit=20",
                method: reqwest::Method::GET,
                path: "/v1/objects/deals/list?limit=20&sort=id".into(),
                token: Some(key.into()),
                body: None,
            },
            options.requests,
        ),
        (
            Scenario {
                name: "GET deals list limit=20 include=company",
                method: reqwest::Method::GET,
                path: "/v1/objects/deals/list?limit=20&sort=id&include=company".into(),
                token: Some(key.into()),
                body: None,
            },
            options.requests,
        ),
        (
            Scenario {
                name: "POST /v1/sql GROUP BY region over every deal",
                method: post.clone(),
                path: "/v1/sql".into(),
                token: Some(key.into()),
                body: Some(json!({ "sql": sql })),
            },
            (options.requests / 20).max(20),
        ),
    ];
    let check: Value = call(client, post.clone(), format!("{base}/v1/sql"), key, json!({ "sql": sql })).await?;
    let counted: u64 = check["data"]["rows"]
        .as_array()
        .context("rows")?
        .iter()
        .filter_map(|r| r[1].as_u64().or(r["deals"].as_u64()))
        .sum();
    if counted != n as u64 {
        bail!("the GROUP BY counted {counted} deals, not {n}: {check}");
    }
    let embedded: Value = client
        .get(format!("{base}/v1/objects/deals/list?limit=20&sort=id&include=company"))
        .bearer_auth(key)
        .send()
        .await?
        .json()
        .await?;
    let with_company = embedded["data"]["results"]
        .as_array()
        .context("page")?
        .iter()
        .filter(|o| !o["included"]["company"].is_null())
        .count();
    if with_company != 20 {
        bail!("the include page embedded {with_company} companies of 20: {embedded}");
    }
    if options.vs.as_deref() == Some("pocketbase") {
        beside_pocketbase(client, base, options, &scenarios).await?;
    } else {
        let heading = format!("scenario (requests), concurrency {}", options.concurrency);
        println!("{heading:<58} {:>10} {:>10} {:>10}", "median", "p99", "req/s");
        for (scenario, requests) in &scenarios {
            let run = Options { requests: *requests, ..options.clone() };
            drive(client, base, scenario, &Options { requests: options.concurrency * 2, ..options.clone() }).await;
            let mut outcome = drive(client, base, scenario, &run).await;
            outcome.latencies.sort();
            if outcome.failures > 0 {
                bail!("{}: {} requests failed", scenario.name, outcome.failures);
            }
            println!(
                "{:<58} {:>8.1}ms {:>8.1}ms {:>10.0}",
                format!("{} ({requests})", scenario.name),
                percentile(&outcome.latencies, 0.5).as_secs_f64() * 1e3,
                percentile(&outcome.latencies, 0.99).as_secs_f64() * 1e3,
                outcome.latencies.len() as f64 / outcome.elapsed.as_secs_f64(),
            );
        }
    }

    // Exports, from the request to the file downloaded.
    for format in ["json", "csv"] {
        let mut runs = Vec::new();
        for _ in 0..3 {
            let started = Instant::now();
            let body = json!({ "object_type_id": "deals", "format": format });
            let answer = call(client, post.clone(), format!("{base}/v1/data/export"), key, body).await?;
            let id = answer["data"]["export_id"].as_str().context("export id")?;
            let url = format!("{base}/v1/data/export/{id}");
            loop {
                let response = client.get(&url).bearer_auth(key).send().await?;
                let is_file = response
                    .headers()
                    .get("content-disposition")
                    .is_some_and(|v| v.to_str().unwrap_or_default().starts_with("attachment"));
                if is_file {
                    let bytes = response.bytes().await?;
                    runs.push((started.elapsed(), bytes.len()));
                    break;
                }
                let got: Value = response.json().await?;
                if got["data"]["status"] == "failed" {
                    bail!("the export failed: {got}");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        runs.sort();
        let (took, size) = runs[1];
        row(
            &format!("export {n} deals as {format}, to the file downloaded (median of 3)"),
            format!(
                "{:.2} s, {:.0} records/s, {:.1} MB",
                took.as_secs_f64(),
                n as f64 / took.as_secs_f64(),
                size as f64 / 1e6
            ),
        );
    }
    Ok(())
}

/// The same deals and companies in PocketBase (each deal's company a relation field), and the
/// same three reads side by side: a first page of 20, the same page with each deal's company
/// (`expand`), and the `GROUP BY` as a view collection (PocketBase's way to serve an aggregate).
async fn beside_pocketbase(
    client: &reqwest::Client,
    base: &str,
    options: &Options,
    ours: &[(Scenario, usize)],
) -> anyhow::Result<()> {
    use crate::pocketbase::{install, load, PocketBase, POCKETBASE_VERSION};
    use crate::record::{Comparison, Figure};
    let n = options.data;
    let binary = match &options.pocketbase {
        Some(path) => std::path::PathBuf::from(path),
        None => install()?,
    };
    let folder = std::env::temp_dir().join(format!("plinth-bench-pocketbase-data-{}", std::process::id()));
    let pocketbase = PocketBase::start(&binary, &folder).await?;
    let theirs = pocketbase.base.clone();
    let token = pocketbase.superuser_token(client).await?;
    let post = reqwest::Method::POST;
    let collections = format!("{theirs}/api/collections");
    let companies = call(
        client,
        post.clone(),
        collections.clone(),
        &token,
        json!({
            "name": "companies", "type": "base",
            "fields": [{ "name": "name", "type": "text" }, { "name": "region", "type": "text" }],
        }),
    )
    .await?;
    let companies_id = companies["id"].as_str().context("collection id")?.to_string();
    call(
        client,
        post.clone(),
        collections.clone(),
        &token,
        json!({
            "name": "deals", "type": "base",
            "fields": [
                { "name": "title", "type": "text" },
                { "name": "region", "type": "text" },
                { "name": "stage", "type": "select", "values": STAGES, "maxSelect": 1 },
                { "name": "amount", "type": "number", "onlyInt": true },
                { "name": "company", "type": "relation", "collectionId": companies_id, "maxSelect": 1 },
                { "name": "created", "type": "autodate", "onCreate": true, "onUpdate": false },
                { "name": "updated", "type": "autodate", "onCreate": true, "onUpdate": true },
            ],
            "indexes": ["CREATE INDEX idx_deals_region ON deals (region)"],
        }),
    )
    .await?;
    call(
        client,
        post.clone(),
        collections.clone(),
        &token,
        json!({
            "name": "deal_regions", "type": "view",
            "viewQuery": "SELECT region AS id, COUNT(*) AS deals, SUM(amount) AS total, AVG(amount) AS average \
                          FROM deals GROUP BY region",
        }),
    )
    .await?;
    let settings = json!({ "batch": { "enabled": true, "maxRequests": 100, "timeout": 30, "maxBodySize": 0 } });
    call(client, reqwest::Method::PATCH, format!("{theirs}/api/settings"), &token, settings).await?;
    let (load_base, load_token) = (theirs.clone(), token.clone());
    load(client, COMPANIES, move |batch| {
        let requests: Vec<Value> = batch
            .map(|i| {
                json!({ "method": "POST", "url": "/api/collections/companies/records",
                             "body": { "name": format!("company {i}"), "region": REGIONS[i % REGIONS.len()] } })
            })
            .collect();
        (format!("{load_base}/api/batch"), load_token.clone(), json!({ "requests": requests }))
    })
    .await?;
    let listed: Value = client
        .get(format!("{theirs}/api/collections/companies/records?perPage=500"))
        .bearer_auth(&token)
        .send()
        .await?
        .json()
        .await?;
    let company_ids: Vec<String> = listed["items"]
        .as_array()
        .context("companies")?
        .iter()
        .filter_map(|c| c["id"].as_str().map(str::to_string))
        .collect();
    let (load_base, load_token) = (theirs.clone(), token.clone());
    let started = Instant::now();
    load(client, n, move |batch| {
        let requests: Vec<Value> = batch
            .map(|i| {
                let mut body = deal(i);
                body["company"] = json!(company_ids[i % company_ids.len()]);
                json!({ "method": "POST", "url": "/api/collections/deals/records", "body": body })
            })
            .collect();
        (format!("{load_base}/api/batch"), load_token.clone(), json!({ "requests": requests }))
    })
    .await?;
    println!("PocketBase loaded {n} deals in {:.1} s", started.elapsed().as_secs_f64());
    let grouped: Value = client
        .get(format!("{theirs}/api/collections/deal_regions/records?skipTotal=1"))
        .bearer_auth(&token)
        .send()
        .await?
        .json()
        .await?;
    let counted: u64 = grouped["items"].as_array().context("groups")?.iter().filter_map(|g| g["deals"].as_u64()).sum();
    if counted != n as u64 {
        bail!("PocketBase's view counted {counted} deals, not {n}: {grouped}");
    }

    let backend = if options.database_url.is_some() { "postgres" } else { "sqlite" };
    let mut comparison = Comparison::new(
        format!("vs-pocketbase-data-{backend}"),
        "PocketBase",
        json!({ "pocketbase": POCKETBASE_VERSION, "records": n, "requests": options.requests,
                "concurrency": options.concurrency, "plinth_backend": backend, "plinth_binary": options.binary }),
    );
    println!("PocketBase {POCKETBASE_VERSION} and Plinth ({backend}): {n} deals, concurrency {}", options.concurrency);
    comparison.header();
    let get = reqwest::Method::GET;
    let side = |path: &str| Scenario {
        name: "",
        method: get.clone(),
        path: path.to_string(),
        token: Some(token.clone()),
        body: None,
    };
    let pairs = [
        ("first page of 20 (with the total)", side("/api/collections/deals/records?perPage=20"), &ours[0]),
        (
            "first page of 20, each with its company",
            side("/api/collections/deals/records?perPage=20&expand=company"),
            &ours[1],
        ),
        ("GROUP BY region over every deal", side("/api/collections/deal_regions/records?skipTotal=1"), &ours[2]),
    ];
    for (name, their_side, (our_side, requests)) in pairs {
        let run = Options { requests: *requests, ..options.clone() };
        let warm = Options { requests: options.concurrency * 2, ..options.clone() };
        drive(client, &theirs, &their_side, &warm).await;
        drive(client, base, our_side, &warm).await;
        let their_figure = Figure::of(drive(client, &theirs, &their_side, &run).await);
        let our_figure = Figure::of(drive(client, base, our_side, &run).await);
        comparison.add(&format!("{name} ({requests})"), their_figure, our_figure);
    }
    drop(pocketbase);
    let _ = std::fs::remove_dir_all(&folder);
    comparison.finish()
}

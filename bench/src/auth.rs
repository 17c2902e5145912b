//! `--auth`: end-user sign-in. Medians and p99 of a login (Argon2id), a wrong password for a known
//! address and any password for an unknown one (the two should not be told apart by time), a
//! reset request for a known and an unknown address, and a read with a user's access token beside
//! the same kind of read with an API key. Requests go one at a time, spread over many accounts
//! and over loopback source addresses (127.0.0.2 and up), so that the per-account and per-address
//! throttles, which a real attacker meets, do not shape the numbers.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use serde_json::{json, Value};

use crate::percentile;

const PASSWORD: &str = "bench-passphrase-granite-42";
/// Accounts the known-address scenarios spread over (each takes a few attempts).
const ACCOUNTS: usize = 64;

struct Clients(Vec<reqwest::Client>, usize);

impl Clients {
    fn new() -> anyhow::Result<Clients> {
        let clients = (2..=250u8)
            .map(|last| {
                reqwest::Client::builder().no_proxy().local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))).build()
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Clients(clients, 0))
    }

    /// The next client, from the next source address.
    fn next(&mut self) -> &reqwest::Client {
        self.1 = (self.1 + 1) % self.0.len();
        &self.0[self.1]
    }
}

/// One request's latency; the answer must have `expected` status.
async fn timed(request: reqwest::RequestBuilder, expected: u16) -> anyhow::Result<Duration> {
    let sent = Instant::now();
    let response = request.send().await?;
    let status = response.status().as_u16();
    let _ = response.bytes().await?;
    let took = sent.elapsed();
    ensure!(status == expected, "expected {expected}, got {status}");
    Ok(took)
}

fn report(name: &str, mut latencies: Vec<Duration>) -> Duration {
    latencies.sort();
    let median = percentile(&latencies, 0.5);
    println!(
        "{:<48} {:>8.2}ms {:>8.2}ms {:>6}",
        name,
        median.as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.len()
    );
    median
}

pub async fn run(client: &reqwest::Client, base: &str, key: &str, tenant: &str, requests: usize) -> anyhow::Result<()> {
    // Each account meets at most four attempts per scenario: well inside its throttle.
    let requests = requests.min(ACCOUNTS * 4);
    let mut clients = Clients::new()?;
    let mut users = Vec::new();
    for n in 0..2 * ACCOUNTS {
        let body = json!({ "email": format!("user{n}@bench.example"), "password": PASSWORD });
        let made = client.post(format!("{base}/v1/users")).bearer_auth(key).json(&body).send().await?;
        ensure!(made.status().is_success(), "creating a user: {}", made.status());
        let made: Value = made.json().await?;
        users.push(made["data"]["id"].as_str().context("user id")?.to_string());
    }
    let login = |client: &reqwest::Client, email: String, password: &str| {
        client
            .post(format!("{base}/v1/auth/login"))
            .header("x-tenant-id", tenant)
            .json(&json!({ "email": email, "password": password }))
    };
    println!("auth: {requests} requests per scenario, one at a time, SQLite unless --database-url");
    println!("{:<48} {:>10} {:>10} {:>6}", "scenario", "median", "p99", "n");

    let mut ok = Vec::new();
    let mut access = String::new();
    for i in 0..requests {
        let request = login(clients.next(), format!("user{}@bench.example", i % ACCOUNTS), PASSWORD);
        let sent = Instant::now();
        let response = request.send().await?;
        ensure!(response.status().is_success(), "login: {}", response.status());
        let answer: Value = response.json().await?;
        ok.push(sent.elapsed());
        access = answer["data"]["access_token"].as_str().context("access_token")?.to_string();
    }
    report("login, right password (Argon2id)", ok);

    let mut wrong = Vec::new();
    let mut unknown = Vec::new();
    for i in 0..requests {
        // Interleaved, so that both meet the same machine state; accounts apart from the first
        // scenario's.
        let email = format!("user{}@bench.example", ACCOUNTS + i % ACCOUNTS);
        wrong.push(timed(login(clients.next(), email, "not-the-passphrase-00"), 401).await?);
        unknown.push(
            timed(login(clients.next(), format!("nobody{i}@bench.example"), "not-the-passphrase-00"), 401).await?,
        );
    }
    let wrong = report("login, wrong password, known address", wrong);
    let unknown = report("login, unknown address", unknown);
    println!("  unknown / known: {:.3}", unknown.as_secs_f64() / wrong.as_secs_f64());

    let forgot = |client: &reqwest::Client, email: String| {
        client
            .post(format!("{base}/v1/auth/forgot-password"))
            .header("x-tenant-id", tenant)
            .json(&json!({ "email": email }))
    };
    let mut known_reset = Vec::new();
    let mut unknown_reset = Vec::new();
    for i in 0..requests {
        known_reset.push(timed(forgot(clients.next(), format!("user{}@bench.example", i % ACCOUNTS)), 200).await?);
        unknown_reset.push(timed(forgot(clients.next(), format!("ghost{i}@bench.example")), 200).await?);
    }
    let known_reset = report("forgot-password, known address", known_reset);
    let unknown_reset = report("forgot-password, unknown address", unknown_reset);
    println!("  unknown / known: {:.3}", unknown_reset.as_secs_f64() / known_reset.as_secs_f64());

    let mut with_user = Vec::new();
    let mut with_key = Vec::new();
    let user_url = format!("{base}/v1/auth/user");
    let admin_url = format!("{base}/v1/users/{}", users[0]);
    for _ in 0..requests {
        with_user.push(timed(client.get(&user_url).bearer_auth(&access), 200).await?);
        with_key.push(timed(client.get(&admin_url).bearer_auth(key), 200).await?);
    }
    let user = report("GET /v1/auth/user with a user's access token", with_user);
    let admin = report("GET /v1/users/{id} with an API key", with_key);
    println!("  user token / API key: {:.3}", user.as_secs_f64() / admin.as_secs_f64());
    Ok(())
}

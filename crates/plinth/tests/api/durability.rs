//! Every write that was answered survives a killed process, in both durability modes, on both
//! databases: writers keep writing while the server is killed (SIGKILL), and after a restart on
//! the same data every object whose create was answered is there, with what was answered.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::Backend;
use crate::on_both_backends;

on_both_backends! {
    async fn answered_writes_survive_a_killed_process(backend) {
        killed_while_writing(backend, "process").await;
    }

    async fn answered_writes_survive_a_killed_process_in_power_loss_mode(backend) {
        killed_while_writing(backend, "power-loss").await;
    }
}

/// A server process on `storage`, killed when dropped.
struct Server(std::process::Child);

impl Server {
    fn start(storage: &crate::common::Storage, port: u16, durability: &str) -> Server {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_plinth"));
        command
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--durability", durability])
            .args(storage.cli_args())
            .env("PLINTH_ADMIN_KEY", crate::common::ADMIN_KEY)
            .env("PLINTH_MASTER_KEY", crate::common::MASTER_KEY)
            .env_remove("PLINTH_DATABASE_URL")
            .env_remove("PLINTH_DURABILITY")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let mut child = command.spawn().unwrap();
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Server(child);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        child.kill().ok();
        child.wait().ok();
        panic!("the server did not start");
    }

    fn kill(mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

async fn killed_while_writing(backend: Backend, durability: &str) {
    let storage = crate::common::Storage::fresh(backend).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let server = Server::start(&storage, port, durability);

    let post = |path: &str, key: &str, body: Value| client.post(format!("{base}{path}")).bearer_auth(key).json(&body);
    let tenant = post("/v1/tenants", crate::common::ADMIN_KEY, json!({ "name": "Killed", "tier": "enterprise" }))
        .send()
        .await
        .unwrap();
    assert_eq!(tenant.status(), 201);
    let tenant: Value = tenant.json().await.unwrap();
    let key = tenant["data"]["api_key"].as_str().unwrap().to_string();
    assert_eq!(post("/v1/object-types", &key, json!({ "name": "notes" })).send().await.unwrap().status(), 201);
    let property = json!({ "name": "n", "data_type": "integer", "is_indexed": true });
    let created = post("/v1/object-types/notes/properties", &key, property).send().await.unwrap();
    assert_eq!(created.status(), 201);

    // Eight writers create notes until the process dies under them; each answered create is
    // remembered with the value it was answered for.
    let answered: Arc<Mutex<HashMap<String, i64>>> = Arc::default();
    let mut writers = Vec::new();
    for writer in 0..8i64 {
        let (client, base, key, answered) = (client.clone(), base.clone(), key.clone(), answered.clone());
        writers.push(tokio::spawn(async move {
            for n in 0.. {
                let value = writer * 1_000_000 + n;
                let sent = client
                    .post(format!("{base}/v1/objects/notes"))
                    .bearer_auth(&key)
                    .json(&json!({ "properties": { "n": value } }))
                    .send()
                    .await;
                let Ok(response) = sent else { return };
                if response.status() != 201 {
                    return;
                }
                let Ok(body) = response.json::<Value>().await else { return };
                let id = body["data"]["id"].as_str().unwrap().to_string();
                answered.lock().unwrap().insert(id, value);
            }
        }));
    }
    for _ in 0..600 {
        if answered.lock().unwrap().len() >= 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.kill();
    for writer in writers {
        writer.await.unwrap();
    }
    let answered = answered.lock().unwrap().clone();
    assert!(answered.len() >= 200, "the writers were answered before the kill: {}", answered.len());

    let server = Server::start(&storage, port, durability);
    let mut stored: HashMap<String, i64> = HashMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{base}/v1/objects/notes/list?limit=100");
        if let Some(cursor) = &cursor {
            url.push_str(&format!("&cursor={cursor}"));
        }
        let page: Value = client.get(url).bearer_auth(&key).send().await.unwrap().json().await.unwrap();
        for object in page["data"]["results"].as_array().unwrap() {
            stored.insert(object["id"].as_str().unwrap().to_string(), object["properties"]["n"].as_i64().unwrap());
        }
        match page["data"]["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    drop(server);
    for (id, value) in &answered {
        assert_eq!(stored.get(id), Some(value), "the answered create of {id} survived the kill ({durability})");
    }
    std::fs::remove_dir_all(&storage.data_dir).ok();
}

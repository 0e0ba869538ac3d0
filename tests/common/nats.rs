//! Real nats-server processes with JetStream on loopback (or in a test's network namespace),
//! started and killed by the tests; and a reader of the KAVWATCH stream that does not go
//! through kavwatch's collector.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use super::netns::Netns;
use super::tool;

/// A port nobody listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub struct NatsServer {
    pub name: String,
    pub port: u16,
    pub conf: PathBuf,
    pub log: PathBuf,
    ns: Option<String>,
    child: Option<Child>,
}

impl NatsServer {
    /// Writes the configuration (`extra` appended: cluster, TLS, authorization) without starting.
    pub fn new(dir: &Path, name: &str, port: u16, extra: &str) -> NatsServer {
        std::fs::create_dir_all(dir).unwrap();
        let conf = dir.join(format!("{name}.conf"));
        let store = dir.join(format!("{name}-js"));
        std::fs::write(
            &conf,
            format!(
                "server_name: {name}\nlisten: 127.0.0.1:{port}\njetstream {{\n  store_dir: \"{}\"\n}}\n{extra}\n",
                store.display()
            ),
        )
        .unwrap();
        NatsServer { name: name.into(), port, conf, log: dir.join(format!("{name}.log")), ns: None, child: None }
    }

    /// One server with JetStream on a free port, started.
    pub fn single(dir: &Path, extra: &str) -> NatsServer {
        let mut s = NatsServer::new(dir, "n1", free_port(), extra);
        s.start();
        s
    }

    /// In this namespace (its own loopback).
    pub fn in_netns(mut self, ns: &Netns) -> NatsServer {
        self.ns = Some(ns.name.clone());
        self
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn start(&mut self) {
        tool("nats-server", "nats-server");
        let mut c = match &self.ns {
            Some(ns) => {
                let mut c = std::process::Command::new("ip");
                c.args(["netns", "exec", ns, "nats-server"]);
                c
            }
            None => std::process::Command::new("nats-server"),
        };
        let ready = std::fs::read_to_string(&self.log).unwrap_or_default().matches("Server is ready").count();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child =
            c.arg("-c").arg(&self.conf).stdout(Stdio::null()).stderr(log).spawn().expect("starting nats-server");
        self.child = Some(child);
        let t = Instant::now();
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if text.matches("Server is ready").count() > ready {
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(20), "nats-server {} did not start: {text}", self.name);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: no goodbye to clients or peers.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Three servers in one JetStream cluster on loopback, started.
pub fn cluster(dir: &Path) -> Vec<NatsServer> {
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let routes: Vec<String> = ports.iter().map(|(_, r)| format!("nats-route://127.0.0.1:{r}")).collect();
    let mut servers: Vec<NatsServer> = ports
        .iter()
        .enumerate()
        .map(|(i, (port, route))| {
            let extra =
                format!("cluster {{\n  name: kw\n  listen: 127.0.0.1:{route}\n  routes: [{}]\n}}", routes.join(", "));
            NatsServer::new(dir, &format!("n{}", i + 1), *port, &extra)
        })
        .collect();
    for s in &mut servers {
        s.start();
    }
    servers
}

/// One message of the stream, as the server holds it.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    pub sequence: u64,
    pub subject: String,
    pub msg_id: String,
    pub body: serde_json::Value,
}

/// Every message of the KAVWATCH stream, read with the NATS client directly (not the collector).
pub fn read_stream(url: &str, env: &[(&str, &str)]) -> Vec<StoredMessage> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let client = rt.block_on(async {
        let mut o = async_nats::ConnectOptions::new();
        if let (Some(u), Some(p)) = (
            env.iter().find(|(k, _)| *k == "NATS_USER").map(|x| x.1),
            env.iter().find(|(k, _)| *k == "NATS_PASSWORD").map(|x| x.1),
        ) {
            o = o.user_and_password(u.into(), p.into());
        }
        o.connect(url).await.expect("connecting to read the stream")
    });
    read_stream_with(&rt, client)
}

/// [`read_stream`] over a connection made by the caller (TLS, credentials).
pub fn read_stream_with(rt: &tokio::runtime::Runtime, client: async_nats::Client) -> Vec<StoredMessage> {
    rt.block_on(async {
        let js = async_nats::jetstream::new(client);
        let mut stream = js.get_stream("KAVWATCH").await.expect("stream KAVWATCH");
        let info = stream.info().await.unwrap().clone();
        let mut out = Vec::new();
        for seq in info.state.first_sequence..=info.state.last_sequence {
            let Ok(m) = stream.get_raw_message(seq).await else { continue };
            out.push(StoredMessage {
                sequence: m.sequence,
                subject: m.subject.to_string(),
                msg_id: m.headers.get("Nats-Msg-Id").map(|v| v.to_string()).unwrap_or_default(),
                body: serde_json::from_slice(&m.payload).unwrap_or(serde_json::Value::Null),
            });
        }
        out
    })
}

/// Waits until the KAVWATCH stream holds at least `n` messages (asked of the server at `url`
/// every few milliseconds); returns how many it held then.
pub fn wait_stream_messages(url: &str, n: u64, timeout: Duration) -> u64 {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    rt.block_on(async {
        let client = async_nats::connect(url).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let t = Instant::now();
        loop {
            if let Ok(mut s) = js.get_stream("KAVWATCH").await
                && let Ok(i) = s.info().await
                && i.state.messages >= n
            {
                return i.state.messages;
            }
            assert!(t.elapsed() < timeout, "the stream never held {n} messages");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
}

//! A fake Proxmox VE (or PBS) HTTPS server for the tests: std threads +
//! rustls with an rcgen self-signed certificate on 127.0.0.1:0. Every
//! request is validated against the schema first (the official one, or the
//! compact description where that is absent); a rejection is answered like
//! PVE (400 + `errors{}`, or 501) AND recorded as a violation, and dropping
//! a [`Fake`] with violations fails the test. An answer whose `data` is not
//! of the type the schema declares is a violation too (the fake drifted).
//!
//! State: guests (qemu/lxc) with locks and snapshots, storages with backup
//! volumes in real volid formats, tasks that take time and can fail, with
//! logs; restore creates guests; vzdump to a dump dir writes a real
//! zstd file.

use super::schema::{parse_form, percent_decode, Rejection, Schema};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const TOKEN_ID: &str = "root@pam!autopilot";
pub const TOKEN_SECRET: &str = "5e1f0c1a-sentinel-secret-0000feedbeef";
pub const PASSWORD: &str = "sentinel-password-7f3a";

/// A guest configuration, `key -> value` as in its config file.
pub type GuestConf = BTreeMap<String, String>;

#[derive(Debug, Clone)]
pub struct Guest {
    pub kind: &'static str,
    pub node: String,
    pub name: String,
    pub status: String,
    pub lock: Option<String>,
    pub snapshots: Vec<Value>,
}

/// The inside of a VM as its guest agent sees it: a Debian whose
/// upgrade installs `available`. Snapshots keep the installed version and a
/// rollback puts it back.
#[derive(Debug, Clone)]
pub struct GuestOs {
    pub os_release: String,
    pub version: String,
    pub available: String,
    /// Versions whose service fails its check once installed.
    pub broken: BTreeSet<String>,
    /// Rewritten with `ok` or `broken` whenever the version changes: the
    /// guest's service as a health check on this machine sees it.
    pub health_file: PathBuf,
}

impl GuestOs {
    pub fn debian(version: &str, available: &str, health_file: PathBuf) -> GuestOs {
        let os = GuestOs {
            os_release: "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nID=debian\n".into(),
            version: version.into(),
            available: available.into(),
            broken: BTreeSet::new(),
            health_file,
        };
        os.write_health();
        os
    }

    fn write_health(&self) {
        let h = if self.broken.contains(&self.version) {
            "broken"
        } else {
            "ok"
        };
        std::fs::write(&self.health_file, format!("{h}\n")).unwrap();
    }
}

#[derive(Debug, Clone)]
enum Effect {
    Unlock(u32),
    AddVolume(String, Value),
    RemoveVolume(String, String),
    AddSnapshot(u32, Value),
    RemoveSnapshot(u32, String),
    CreateGuest(u32, Guest),
    /// A restore's guest configuration (set with the guest).
    SetConfig(u32, GuestConf),
    RemoveGuest(u32),
    WriteFile(PathBuf),
    SetStatus(u32, &'static str),
    /// Snapshot rollback: the guest's OS back to the snapshot's version;
    /// the guest stopped, or started with `start=1`.
    Rollback(u32, String, bool),
    /// vzdump `remove=1`: keep the newest N backups of a VMID on a storage.
    PruneTo(String, u32, usize),
}

/// A failure of one task-status poll, as PVE gives them under load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// 500 "can't lock file ... - got timeout" (a node-side file lock).
    GotTimeout,
    /// 595 / 596 from pveproxy when the node's daemon does not answer.
    E595,
    E596,
    /// The connection closes without an answer.
    Drop,
}

#[derive(Debug)]
struct Task {
    node: String,
    start: Instant,
    dur: Duration,
    exit: String,
    log: Vec<String>,
    done: bool,
    /// Started by [`State::hold_lock`] (another client's task).
    hold: bool,
    effects: Vec<Effect>,
}

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    #[allow(dead_code)]
    pub params: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
}

#[derive(Default)]
pub struct State {
    pub requests: Vec<Recorded>,
    pub violations: Vec<String>,
    pub guests: BTreeMap<u32, Guest>,
    /// storage id -> (is_pbs, volumes)
    pub storages: BTreeMap<String, (bool, Vec<Value>)>,
    tasks: BTreeMap<String, Task>,
    tickets: BTreeSet<String>,
    csrf: String,
    /// Answer the next N GETs with 596.
    pub fail_596: u32,
    /// Answer the next N POSTs with 596.
    pub fail_596_post: u32,
    pub task_ms: u64,
    /// vzdump of these VMIDs fails ("job errors").
    pub fail_vzdump: BTreeSet<u32>,
    /// vzdump of these VMIDs ends with "WARNINGS: 1".
    pub warn_vzdump: BTreeSet<u32>,
    /// Ticket renewals seen (the old ticket POSTed as password).
    pub renewals: usize,
    /// PBS snapshots (PBS flavour).
    pub pbs_snapshots: Vec<Value>,
    /// Verify jobs of the PBS flavour find the chunks damaged.
    pub pbs_verify_fails: bool,
    /// Storage configuration beyond id and type (`prune-backups`, a PBS
    /// storage's `server`, `datastore`, ...), as `GET /storage` lists it.
    pub storage_conf: BTreeMap<String, Value>,
    /// Answers to the next task-status polls, one each, in order.
    pub poll_faults: Vec<Fault>,
    /// The next vzdump or snapshot of this VMID finds that another client's
    /// task took this lock just before (after our lock check).
    pub lock_race: BTreeMap<u32, &'static str>,
    /// Dump directories are on the node, not on the test machine: vzdump
    /// writes nothing here (the size is only in the task log).
    pub remote_dumpdir: bool,
    /// Errors as older PVE versions send them: the message only in the
    /// reason phrase, the body `{"data":null}`.
    pub old_errors: bool,
    /// TLS connections accepted (handshakes attempted).
    pub connections: usize,
    /// Tasks of [`State::hold_lock`] end after this many task-list
    /// requests (instead of after their time).
    pub hold_lists: Option<usize>,
    /// What runs inside guests (VMs answer through the agent).
    pub os: BTreeMap<u32, GuestOs>,
    /// The OS version each snapshot holds, by (VMID, snapshot name).
    pub snap_os: BTreeMap<(u32, String), String>,
    /// Commands run through the guest agent, by VMID.
    pub agent_runs: Vec<(u32, Vec<String>)>,
    /// Agent exec results by pid.
    agent_results: BTreeMap<i64, Value>,
    /// Guest configurations (`GET/PUT .../config`), by VMID; guests
    /// without one answer a minimal config of their kind.
    pub configs: BTreeMap<u32, GuestConf>,
    /// The configuration inside a backup volume (`vzdump/extractconfig`,
    /// and what a restore creates), by volid; default: a guest of the
    /// volume's kind with one NIC on vmbr0 (and the agent on, for a VM).
    pub archive_configs: BTreeMap<String, GuestConf>,
    /// Exit codes of programs run through the agent in VMs without a
    /// modelled OS (by argv[0]; default 0).
    pub agent_exit: BTreeMap<String, i64>,
    /// The configuration of each guest as it was when a start was asked
    /// for, in order.
    pub started_configs: Vec<(u32, GuestConf)>,
    /// The IPv4 address a running guest reports on eth0 (through the
    /// agent for a VM, `lxc/{vmid}/interfaces` for a container), by VMID;
    /// default `10.99.0.<10 + VMID % 200>`.
    pub addresses: BTreeMap<u32, String>,
    counter: u32,
}

pub struct Fake {
    pub addr: SocketAddr,
    pub fingerprint: String,
    pub state: Arc<Mutex<State>>,
}

impl State {
    /// Finish the tasks whose time is up (the fake does on every request).
    pub fn poll(&mut self) {
        tick(self);
    }

    /// Forget every ticket, as after their 2 h lifetime.
    pub fn expire_tickets(&mut self) {
        self.tickets.clear();
    }

    /// Another client's task (`wtype`, task id `id`: the VMID, or empty for
    /// a job over several guests) locks guest `vmid` with `lock` for `ms`.
    pub fn hold_lock(&mut self, vmid: u32, lock: &str, wtype: &str, id: &str, ms: u64) -> String {
        let node = self.guests[&vmid].node.clone();
        self.guests.get_mut(&vmid).unwrap().lock = Some(lock.into());
        let upid = new_task(
            self,
            &node,
            wtype,
            id,
            Some(vmid),
            "OK",
            vec![],
            vec![Effect::Unlock(vmid)],
            false,
        );
        let t = self.tasks.get_mut(&upid).unwrap();
        t.dur = Duration::from_millis(ms);
        t.hold = true;
        upid
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        let v = self
            .state
            .lock()
            .map(|s| s.violations.clone())
            .unwrap_or_default();
        if !v.is_empty() && !std::thread::panicking() {
            panic!(
                "the client sent requests the schema rejects (or the fake answered off-schema):\n{}",
                v.join("\n")
            );
        }
    }
}

impl Fake {
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    pub fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.state.lock().unwrap())
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.with(|s| s.requests.clone())
    }

    /// Start a fake on 127.0.0.1 with a homelab's state: node pve1, VM 100
    /// (web, running), CT 200 (nextcloud), storages local (dir), local-lvm,
    /// pbs (PBS).
    pub fn start(schema: Arc<Schema>, pbs: bool) -> Fake {
        let cert =
            rcgen::generate_simple_self_signed(vec!["pve1".into(), "127.0.0.1".into()]).unwrap();
        let der = cert.cert.der().to_vec();
        let key = cert.signing_key.serialize_der();
        Fake::start_with(schema, pbs, der, key)
    }

    /// A fake whose certificate (for 127.0.0.1) is signed by a fresh CA;
    /// returns the CA certificate as PEM too.
    pub fn start_with_ca(schema: Arc<Schema>) -> (Fake, String) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&leaf_key, &ca)
            .unwrap();
        let fake = Fake::start_with(schema, false, leaf.der().to_vec(), leaf_key.serialize_der());
        (fake, ca.pem())
    }

    fn start_with(schema: Arc<Schema>, pbs: bool, der: Vec<u8>, key: Vec<u8>) -> Fake {
        let fingerprint = homelab_autopilot::pve::tls::fingerprint_of(&der);
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key));
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![CertificateDer::from(der)], key)
        .unwrap();
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut st = State {
            task_ms: 300,
            csrf: "4EEC61E2:csrf".into(),
            ..Default::default()
        };
        st.guests.insert(
            100,
            Guest {
                kind: "qemu",
                node: "pve1".into(),
                name: "web".into(),
                status: "running".into(),
                lock: None,
                snapshots: vec![],
            },
        );
        st.guests.insert(
            200,
            Guest {
                kind: "lxc",
                node: "pve1".into(),
                name: "nextcloud".into(),
                status: "running".into(),
                lock: None,
                snapshots: vec![],
            },
        );
        st.storages.insert("local".into(), (false, vec![]));
        st.storages.insert("local-lvm".into(), (false, vec![]));
        st.storages.insert("pbs".into(), (true, vec![]));
        st.storage_conf.insert(
            "pbs".into(),
            json!({"server": "127.0.0.1", "datastore": "proxmox-backups", "username": "root@pam!autopilot"}),
        );
        let state = Arc::new(Mutex::new(st));
        let (s2, sc) = (state.clone(), schema.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(tcp) = conn else { continue };
                s2.lock().unwrap().connections += 1;
                let (state, schema, config) = (s2.clone(), sc.clone(), config.clone());
                std::thread::spawn(move || {
                    let Ok(conn) = rustls::ServerConnection::new(config) else {
                        return;
                    };
                    let mut tls = rustls::StreamOwned::new(conn, tcp);
                    let _ = serve(&mut tls, &state, &schema, pbs);
                });
            }
        });
        Fake {
            addr,
            fingerprint,
            state,
        }
    }
}

fn serve(
    stream: &mut (impl Read + Write),
    state: &Mutex<State>,
    schema: &Schema,
    pbs: bool,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(&mut *stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body)?;
    drop(reader);
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let (status, reason, body) = handle(
        state,
        schema,
        pbs,
        &method,
        path,
        query,
        &String::from_utf8_lossy(&body),
        headers,
    );
    if status == 0 {
        // Fault::Drop: close without an answer.
        return Ok(());
    }
    let resp = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json;charset=UTF-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(resp.as_bytes())?;
    stream.flush()
}

fn ok(data: Value) -> (u16, String, String) {
    (200, "OK".into(), json!({ "data": data }).to_string())
}

fn err(pbs: bool, status: u16, msg: &str) -> (u16, String, String) {
    if pbs {
        (status, msg.into(), msg.into())
    } else {
        (
            status,
            msg.lines().next().unwrap_or("").into(),
            json!({"data": null, "message": format!("{msg}\n")}).to_string(),
        )
    }
}

#[allow(clippy::too_many_arguments)]
fn handle(
    state: &Mutex<State>,
    schema: &Schema,
    pbs: bool,
    method: &str,
    raw_path: &str,
    query: &str,
    body: &str,
    headers: Vec<(String, String)>,
) -> (u16, String, String) {
    let Some(path) = raw_path.strip_prefix("/api2/json") else {
        return err(pbs, 501, "no such uri");
    };
    let path = path.to_string();
    let mut params = parse_form(query);
    if !body.is_empty() {
        if method == "GET" || method == "DELETE" {
            return err(
                pbs,
                501,
                &format!("Unexpected content for method '{method}'"),
            );
        }
        params.extend(parse_form(body));
    }
    let mut st = state.lock().unwrap();
    st.requests.push(Recorded {
        method: method.into(),
        path: path.clone(),
        params: params.clone(),
        headers: headers.clone(),
    });
    // Schema first: a request the official schema rejects fails the test.
    let vars = match schema.validate(method, &path, &params) {
        Ok(v) => v,
        Err(Rejection::NotImplemented(m)) => {
            st.violations.push(m.clone());
            return err(pbs, 501, &m);
        }
        Err(Rejection::Params(e)) => {
            st.violations.push(format!("{method} {path}: {e:?}"));
            if pbs {
                return err(pbs, 400, &format!("parameter verification errors: {e:?}"));
            }
            return (
                400,
                "Parameter verification failed.".into(),
                json!({"data": null, "errors": e, "message": "Parameter verification failed.\n"})
                    .to_string(),
            );
        }
    };
    let p: BTreeMap<String, String> = params.iter().cloned().collect();
    let h = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    // Auth.
    if path == "/access/ticket" && method == "POST" {
        let pw = p.get("password").cloned().unwrap_or_default();
        if p.get("username").map(String::as_str) == Some("root@pam")
            && (pw == PASSWORD || st.tickets.contains(&pw))
        {
            st.renewals += usize::from(pw != PASSWORD);
            st.counter += 1;
            let ticket = format!(
                "{}:root@pam:{:08X}::c2lnbmF0dXJl{}",
                if pbs { "PBS" } else { "PVE" },
                0x6800_0000u32 + st.counter,
                st.counter
            );
            st.tickets.insert(ticket.clone());
            return ok(
                json!({"username": "root@pam", "ticket": ticket, "CSRFPreventionToken": st.csrf, "cap": {}}),
            );
        }
        return err(pbs, 401, "authentication failure");
    }
    let auth = h("authorization").unwrap_or_default();
    let token_ok = if pbs {
        auth == format!("PBSAPIToken={TOKEN_ID}:{TOKEN_SECRET}")
    } else {
        auth.strip_prefix("PVEAPIToken=")
            .and_then(|t| t.rsplit_once('='))
            .is_some_and(|(id, s)| id == TOKEN_ID && s == TOKEN_SECRET)
    };
    let cookie_ticket = h("cookie").and_then(|c| {
        c.split(';').find_map(|kv| {
            kv.trim()
                .strip_prefix(if pbs {
                    "PBSAuthCookie="
                } else {
                    "PVEAuthCookie="
                })
                .map(percent_decode)
        })
    });
    let ticket_ok = cookie_ticket
        .as_ref()
        .is_some_and(|t| st.tickets.contains(t));
    if !token_ok && !ticket_ok {
        return err(
            pbs,
            401,
            if auth.is_empty() && cookie_ticket.is_none() {
                "No ticket"
            } else {
                "Authentication failed!"
            },
        );
    }
    if ticket_ok
        && !token_ok
        && method != "GET"
        && h("csrfpreventiontoken").as_deref() != Some(st.csrf.as_str())
    {
        return err(pbs, 401, "Permission denied - invalid csrf token");
    }
    let is_root = ticket_ok && !token_ok;
    if method == "GET" && st.fail_596 > 0 {
        st.fail_596 -= 1;
        return err(pbs, 596, "Broken pipe");
    }
    if method == "POST" && st.fail_596_post > 0 {
        st.fail_596_post -= 1;
        return err(pbs, 596, "Connection timed out");
    }
    tick(&mut st);
    if method == "GET"
        && path.contains("/tasks/")
        && path.ends_with("/status")
        && !st.poll_faults.is_empty()
    {
        let msg = "can't lock file '/var/lock/qemu-server/lock-100.conf' - got timeout";
        return match st.poll_faults.remove(0) {
            Fault::GotTimeout => err(pbs, 500, msg),
            Fault::E595 => err(pbs, 595, "Connection refused"),
            Fault::E596 => err(pbs, 596, "Connection timed out"),
            Fault::Drop => (0, String::new(), String::new()),
        };
    }
    let mut answer = if pbs {
        pbs_route(&mut st, method, &path, &p, &vars)
    } else {
        route(&mut st, method, &path, &p, &params, &vars, is_root)
    };
    if let Some(bad) = off_schema(schema, method, &path, &answer) {
        st.violations.push(bad);
    }
    if st.old_errors && answer.0 >= 400 {
        answer.2 = json!({ "data": null }).to_string();
    }
    answer
}

/// A successful answer whose `data` is not of the declared return type.
fn off_schema(
    schema: &Schema,
    method: &str,
    path: &str,
    answer: &(u16, String, String),
) -> Option<String> {
    if answer.0 != 200 {
        return None;
    }
    let want = schema.returns(method, path)?;
    let data = serde_json::from_str::<Value>(&answer.2).ok()?["data"].take();
    let fits = match want.as_str() {
        "object" => data.is_object(),
        "array" => data.is_array(),
        "string" => data.is_string(),
        "boolean" => data.is_boolean() || data.as_i64().is_some_and(|n| n == 0 || n == 1),
        // Perl sends some numbers as strings.
        "integer" => {
            data.is_i64()
                || data.is_u64()
                || data.as_str().is_some_and(|s| s.parse::<i64>().is_ok())
        }
        "number" => data.is_number() || data.as_str().is_some_and(|s| s.parse::<f64>().is_ok()),
        "null" => data.is_null(),
        _ => true,
    };
    (!fits).then(|| {
        format!(
            "{method} {path}: the fake answered {data} where the {} schema returns {want}",
            schema.source
        )
    })
}

/// Finish tasks whose time is up, applying their effects.
fn tick(st: &mut State) {
    let now = Instant::now();
    let done: Vec<String> = st
        .tasks
        .iter()
        .filter(|(_, t)| !t.done && now >= t.start + t.dur)
        .map(|(k, _)| k.clone())
        .collect();
    for upid in done {
        let (effects, success) = {
            let t = st.tasks.get_mut(&upid).unwrap();
            t.done = true;
            (
                std::mem::take(&mut t.effects),
                t.exit == "OK" || t.exit.starts_with("WARNINGS"),
            )
        };
        for e in effects {
            match e {
                Effect::Unlock(v) => {
                    if let Some(g) = st.guests.get_mut(&v) {
                        g.lock = None;
                    }
                }
                _ if !success => {}
                Effect::AddVolume(s, v) => st.storages.get_mut(&s).unwrap().1.push(v),
                Effect::RemoveVolume(s, vol) => st
                    .storages
                    .get_mut(&s)
                    .unwrap()
                    .1
                    .retain(|v| v["volid"] != vol.as_str()),
                Effect::AddSnapshot(v, s) => {
                    if let Some(os) = st.os.get(&v) {
                        let name = s["name"].as_str().unwrap_or_default().to_string();
                        st.snap_os.insert((v, name), os.version.clone());
                    }
                    st.guests.get_mut(&v).unwrap().snapshots.push(s)
                }
                Effect::Rollback(v, name, start) => {
                    if let (Some(ver), Some(os)) =
                        (st.snap_os.get(&(v, name)).cloned(), st.os.get_mut(&v))
                    {
                        os.version = ver;
                        os.write_health();
                    }
                    if let Some(g) = st.guests.get_mut(&v) {
                        g.status = if start { "running" } else { "stopped" }.into();
                    }
                }
                Effect::RemoveSnapshot(v, n) => st
                    .guests
                    .get_mut(&v)
                    .unwrap()
                    .snapshots
                    .retain(|s| s["name"] != n.as_str()),
                Effect::CreateGuest(v, g) => {
                    st.guests.insert(v, g);
                }
                Effect::SetConfig(v, c) => {
                    st.configs.insert(v, c);
                }
                Effect::RemoveGuest(v) => {
                    st.guests.remove(&v);
                    st.configs.remove(&v);
                }
                Effect::WriteFile(p) => {
                    let data = zstd::encode_all(&b"fake vma archive payload"[..], 3).unwrap();
                    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                    std::fs::write(&p, data).unwrap();
                }
                Effect::SetStatus(v, s) => {
                    if let Some(g) = st.guests.get_mut(&v) {
                        g.status = s.into();
                    }
                }
                Effect::PruneTo(s, vmid, keep) => {
                    let vols = &mut st.storages.get_mut(&s).unwrap().1;
                    let ctime = |v: &Value| {
                        v["ctime"]
                            .to_string()
                            .trim_matches('"')
                            .parse::<i64>()
                            .unwrap_or(0)
                    };
                    let of =
                        |v: &Value| v["vmid"].to_string().trim_matches('"') == vmid.to_string();
                    let mut mine: Vec<Value> = vols.iter().filter(|v| of(v)).cloned().collect();
                    mine.sort_by_key(|v| std::cmp::Reverse(ctime(v)));
                    let gone: Vec<Value> =
                        mine.iter().skip(keep).map(|v| v["volid"].clone()).collect();
                    vols.retain(|v| !gone.contains(&v["volid"]));
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn new_task(
    st: &mut State,
    node: &str,
    wtype: &str,
    id: &str,
    vmid: Option<u32>,
    exit: &str,
    log: Vec<String>,
    effects: Vec<Effect>,
    pbs: bool,
) -> String {
    st.counter += 1;
    let now = chrono::Utc::now().timestamp() as u32;
    let upid = if pbs {
        format!(
            "UPID:{node}:{:08X}:{:08X}:{:08X}:{now:08X}:{wtype}:{id}:{TOKEN_ID}:",
            4000 + st.counter,
            77,
            st.counter
        )
    } else {
        format!(
            "UPID:{node}:{:08X}:{:08X}:{now:08X}:{wtype}:{id}:{TOKEN_ID}:",
            4000 + st.counter,
            77
        )
    };
    // The task list filters on the UPID's id field, as PVE does.
    let _ = vmid;
    let mut log = log;
    log.push(if exit == "OK" {
        "TASK OK".into()
    } else if exit.starts_with("WARNINGS") {
        format!("TASK {exit}")
    } else {
        format!("TASK ERROR: {exit}")
    });
    let dur = Duration::from_millis(st.task_ms);
    st.tasks.insert(
        upid.clone(),
        Task {
            node: node.into(),
            start: Instant::now(),
            dur,
            exit: exit.into(),
            log,
            done: false,
            hold: false,
            effects,
        },
    );
    upid
}

fn guest_task(
    st: &mut State,
    vmid: u32,
    wtype: &str,
    lock: Option<&str>,
    mut effects: Vec<Effect>,
    log: Vec<String>,
) -> (u16, String, String) {
    let g = st.guests.get(&vmid).unwrap().clone();
    let label = if g.kind == "qemu" { "VM" } else { "CT" };
    let (exit, effects) = if let Some(l) = &g.lock {
        (format!("{label} is locked ({l})"), vec![])
    } else {
        if let Some(l) = lock {
            st.guests.get_mut(&vmid).unwrap().lock = Some(l.into());
            effects.push(Effect::Unlock(vmid));
        }
        ("OK".to_string(), effects)
    };
    let upid = new_task(
        st,
        &g.node,
        wtype,
        &vmid.to_string(),
        Some(vmid),
        &exit,
        log,
        effects,
        false,
    );
    ok(json!(upid))
}

#[allow(clippy::too_many_arguments)]
fn route(
    st: &mut State,
    method: &str,
    path: &str,
    p: &BTreeMap<String, String>,
    params: &[(String, String)],
    vars: &BTreeMap<String, String>,
    is_root: bool,
) -> (u16, String, String) {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let vmid: Option<u32> = vars.get("vmid").and_then(|v| v.parse().ok());
    let node = vars.get("node").cloned().unwrap_or_default();
    // Guest existence (on that node: proxyto semantics).
    if let Some(v) = vmid {
        let kind = segs.get(2).copied().unwrap_or_default();
        match st.guests.get(&v) {
            Some(g) if g.node == node && g.kind == kind => {}
            _ => {
                let dir = if kind == "qemu" { "qemu-server" } else { "lxc" };
                return err(
                    false,
                    500,
                    &format!("Configuration file 'nodes/{node}/{dir}/{v}.conf' does not exist"),
                );
            }
        }
    }
    match (method, segs.as_slice()) {
        ("GET", ["version"]) => {
            ok(json!({"version": "9.1.4", "release": "9.1", "repoid": "abcdef12"}))
        }
        ("GET", ["cluster", "nextid"]) => {
            let mut id = 100;
            while st.guests.contains_key(&id) {
                id += 1;
            }
            ok(json!(id.to_string()))
        }
        ("GET", ["cluster", "resources"]) => {
            let mut out: Vec<Value> = st.guests.iter().map(|(id, g)| json!({"id": format!("{}/{id}", g.kind), "type": g.kind, "vmid": id, "node": g.node, "name": g.name, "status": g.status, "lock": g.lock})).collect();
            if p.get("type").map(String::as_str) != Some("vm") {
                for (s, (is_pbs, _)) in &st.storages {
                    out.push(json!({"id": format!("storage/pve1/{s}"), "type": "storage", "storage": s, "node": "pve1", "plugintype": if *is_pbs {"pbs"} else {"dir"}}));
                }
            }
            ok(json!(out))
        }
        ("GET", ["nodes", _, "status"]) => ok(json!({
            "cpu": 0.12, "cpuinfo": {"cores": 4, "cpus": 8, "model": "Fake CPU", "sockets": 1},
            "memory": {"total": "16777216000", "used": 8388608000u64, "free": 8388608000u64, "available": 9000000000u64},
            "rootfs": {"total": 100000000000u64, "used": "25000000000", "free": 75000000000u64, "avail": 70000000000u64},
            "loadavg": ["0.10", "0.20", "0.30"], "pveversion": "pve-manager/9.1.4", "uptime": 3600,
            "current-kernel": {"sysname": "Linux", "release": "6.14", "version": "#1", "machine": "x86_64"},
            "boot-info": {"mode": "efi"}})),
        ("GET", ["nodes", _, "tasks"]) => {
            // PVE's list: `id` is the task's id field (empty for a job over
            // several guests), a running task's status is "RUNNING".
            let want = p.get("vmid").cloned();
            let active = p.get("source").map(String::as_str) == Some("active");
            if let Some(n) = st.hold_lists.as_mut() {
                if *n == 0 {
                    for t in st.tasks.values_mut().filter(|t| t.hold) {
                        t.dur = Duration::ZERO;
                    }
                    tick(st);
                } else {
                    *n -= 1;
                }
            }
            let list: Vec<Value> = st
                .tasks
                .iter()
                .filter(|(_, t)| t.node == node && (!active || !t.done))
                .filter_map(|(u, t)| {
                    let f: Vec<&str> = u.split(':').collect();
                    let (wtype, id, user) = (f[5], f[6], f[7]);
                    if want.as_ref().is_some_and(|w| w != id) {
                        return None;
                    }
                    let mut row = json!({"upid": u, "node": node, "pid": 4000, "pstart": 77, "starttime": 1_700_000_000, "type": wtype, "id": id, "user": user});
                    row["status"] = json!(if t.done { t.exit.clone() } else { "RUNNING".into() });
                    Some(row)
                })
                .collect();
            ok(json!(list))
        }
        ("GET", ["storage"]) => {
            let want = p.get("type").cloned();
            let list: Vec<Value> = st
                .storages
                .iter()
                .map(|(id, (is_pbs, _))| {
                    let mut row = json!({"storage": id, "type": if *is_pbs { "pbs" } else { "dir" }, "content": "backup", "digest": "d1"});
                    if let Some(Value::Object(extra)) = st.storage_conf.get(id) {
                        for (k, v) in extra {
                            row[k] = v.clone();
                        }
                    }
                    row
                })
                .filter(|row| want.as_ref().is_none_or(|t| row["type"] == t.as_str()))
                .collect();
            ok(json!(list))
        }
        ("GET", ["nodes", _, "tasks", _, "status"]) => {
            let upid = vars.get("upid").cloned().unwrap_or_default();
            match st.tasks.get(&upid) {
                None => (
                    400,
                    "Parameter verification failed.".into(),
                    json!({"data": null, "errors": {"upid": "no such task"}}).to_string(),
                ),
                Some(t) if t.done => ok(
                    json!({"upid": upid, "node": t.node, "status": "stopped", "exitstatus": t.exit, "pid": 4000, "starttime": 1, "type": "x", "user": TOKEN_ID}),
                ),
                Some(t) => ok(
                    json!({"upid": upid, "node": t.node, "status": "running", "pid": 4000, "starttime": 1, "type": "x", "user": TOKEN_ID}),
                ),
            }
        }
        ("GET", ["nodes", _, "tasks", _, "log"]) => {
            let upid = vars.get("upid").cloned().unwrap_or_default();
            let Some(t) = st.tasks.get(&upid) else {
                return err(false, 400, "no such task");
            };
            let lines: Vec<String> = if t.done {
                t.log.clone()
            } else {
                t.log[..t.log.len() - 1].to_vec()
            };
            let start: usize = p.get("start").and_then(|s| s.parse().ok()).unwrap_or(0);
            let limit: usize = p.get("limit").and_then(|s| s.parse().ok()).unwrap_or(50);
            let out: Vec<Value> = lines
                .iter()
                .enumerate()
                .skip(start)
                .take(limit)
                .map(|(i, l)| json!({"n": i + 1, "t": l}))
                .collect();
            (
                200,
                "OK".into(),
                json!({"data": out, "total": lines.len()}).to_string(),
            )
        }
        ("GET", [_, _, _, _, "status", "current"]) => {
            let g = &st.guests[&vmid.unwrap()];
            ok(
                json!({"vmid": vmid.unwrap(), "status": g.status, "ha": {"managed": 0}, "name": g.name, "lock": g.lock, "maxmem": "2147483648", "uptime": "1234"}),
            )
        }
        ("POST", [_, _, _, _, "status", action]) => {
            let v = vmid.unwrap();
            if *action == "start" {
                let conf = guest_conf(st, v);
                st.started_configs.push((v, conf));
            }
            let st_to = if *action == "start" {
                "running"
            } else {
                "stopped"
            };
            let w = format!("{}{action}", if segs[2] == "qemu" { "qm" } else { "vz" });
            guest_task(st, v, &w, None, vec![Effect::SetStatus(v, st_to)], vec![])
        }
        ("GET", [_, _, _, _, "snapshot"]) => {
            let g = &st.guests[&vmid.unwrap()];
            let mut list = g.snapshots.clone();
            list.push(json!({"name": "current", "description": "You are here!", "running": if g.status == "running" {1} else {0}, "digest": "abc"}));
            ok(json!(list))
        }
        ("POST", [_, _, _, _, "snapshot"]) => {
            let v = vmid.unwrap();
            let name = p["snapname"].clone();
            // qemu-server reserves 'pending', pve-container 'vzdump'.
            let reserved_names = if st.guests[&v].kind == "qemu" {
                ["current", "pending"]
            } else {
                ["current", "vzdump"]
            };
            let reserved = reserved_names.contains(&name.to_lowercase().as_str());
            if reserved {
                return err(
                    false,
                    500,
                    &format!("unable to use snapshot name '{name}' (reserved name)"),
                );
            }
            let g = st.guests[&v].clone();
            let w = if g.kind == "qemu" {
                "qmsnapshot"
            } else {
                "vzsnapshot"
            };
            if g.snapshots.iter().any(|s| s["name"] == name.as_str()) {
                let upid = new_task(
                    st,
                    &node,
                    w,
                    &v.to_string(),
                    Some(v),
                    &format!("snapshot name '{name}' already used"),
                    vec![],
                    vec![],
                    false,
                );
                return ok(json!(upid));
            }
            if let Some(lock) = st.lock_race.remove(&v) {
                st.hold_lock(v, lock, "vzdump", &v.to_string(), 700);
            }
            let vmstate =
                p.get("vmstate").map(|s| s == "1").unwrap_or(false) && g.status == "running";
            let snap = json!({"name": name, "description": p.get("description").cloned().unwrap_or_default(), "snaptime": chrono::Utc::now().timestamp(), "vmstate": if vmstate {1} else {0}});
            guest_task(
                st,
                v,
                w,
                Some("snapshot"),
                vec![Effect::AddSnapshot(v, snap)],
                vec![],
            )
        }
        ("POST", [_, _, _, _, "snapshot", _, "rollback"])
        | ("DELETE", [_, _, _, _, "snapshot", _]) => {
            let v = vmid.unwrap();
            let name = vars["snapname"].clone();
            let g = st.guests[&v].clone();
            if !g.snapshots.iter().any(|s| s["name"] == name.as_str()) {
                return err(false, 500, &format!("snapshot '{name}' does not exist"));
            }
            let pre = if g.kind == "qemu" { "qm" } else { "vz" };
            if method == "DELETE" {
                guest_task(
                    st,
                    v,
                    &format!("{pre}delsnapshot"),
                    Some("snapshot-delete"),
                    vec![Effect::RemoveSnapshot(v, name)],
                    vec![],
                )
            } else {
                let start = p.get("start").is_some_and(|s| s == "1");
                guest_task(
                    st,
                    v,
                    &format!("{pre}rollback"),
                    Some("rollback"),
                    vec![Effect::Rollback(v, name, start)],
                    vec![],
                )
            }
        }
        ("POST", [_, _, _, _, "clone"]) => {
            let v = vmid.unwrap();
            let newid: u32 = p["newid"].parse().unwrap();
            let mut g = st.guests[&v].clone();
            g.status = "stopped".into();
            g.snapshots.clear();
            let w = if g.kind == "qemu" {
                "qmclone"
            } else {
                "vzclone"
            };
            guest_task(
                st,
                v,
                w,
                Some("clone"),
                vec![Effect::CreateGuest(newid, g)],
                vec![],
            )
        }
        ("DELETE", ["nodes", _, kind, _]) if *kind == "qemu" || *kind == "lxc" => {
            let v = vmid.unwrap();
            if guest_conf(st, v)
                .get("protection")
                .is_some_and(|p| p == "1")
            {
                let label = if *kind == "qemu" { "VM" } else { "CT" };
                return err(
                    false,
                    500,
                    &format!("can't remove {label} {v} - protection mode enabled"),
                );
            }
            if st.guests[&v].status == "running" && *kind == "qemu" {
                return err(false, 500, &format!("VM {v} is running - destroy failed"));
            }
            let w = if *kind == "qemu" {
                "qmdestroy"
            } else {
                "vzdestroy"
            };
            guest_task(
                st,
                v,
                w,
                Some("destroyed"),
                vec![Effect::RemoveGuest(v)],
                vec![],
            )
        }
        ("POST", [_, _, "qemu", _, "agent", "exec"]) => {
            let cmd: Vec<&String> = params
                .iter()
                .filter(|(k, _)| k == "command")
                .map(|(_, v)| v)
                .collect();
            if cmd.is_empty() {
                return err(false, 500, "no command");
            }
            let v = vmid.unwrap();
            if st.guests[&v].status != "running" {
                return err(false, 500, &format!("VM {v} is not running"));
            }
            let argv: Vec<String> = cmd.into_iter().cloned().collect();
            st.agent_runs.push((v, argv.clone()));
            if !st.os.contains_key(&v) {
                let code = st.agent_exit.get(&argv[0]).copied().unwrap_or(0);
                st.counter += 1;
                let pid = 1000 + i64::from(st.counter);
                let mut r = json!({"exited": 1, "exitcode": code, "out-data": "hello\n"});
                if code != 0 {
                    r["err-data"] = json!(format!("{}: check failed\n", argv[0]));
                }
                st.agent_results.insert(pid, r);
                return ok(json!({ "pid": pid.to_string() }));
            }
            let Some(result) = agent_command(st.os.get_mut(&v).unwrap(), &argv) else {
                return err(
                    false,
                    500,
                    &format!(
                        "Agent error: Failed to execute child process \u{201c}{}\u{201d} (No such file or directory)",
                        argv[0]
                    ),
                );
            };
            st.counter += 1;
            let pid = 1000 + i64::from(st.counter);
            st.agent_results.insert(pid, result);
            // The agent answers with a number; PVE passes it through.
            ok(json!({ "pid": pid }))
        }
        ("GET", [_, _, "qemu", _, "agent", "exec-status"]) => {
            let pid: i64 = p.get("pid").and_then(|s| s.parse().ok()).unwrap_or(0);
            if !st.os.contains_key(&vmid.unwrap()) && !st.agent_results.contains_key(&pid) {
                return ok(json!({"exited": 1, "exitcode": 0, "out-data": "hello\n"}));
            }
            match st.agent_results.get(&pid) {
                Some(r) => ok(r.clone()),
                None => err(
                    false,
                    500,
                    &format!("Agent error: Invalid parameter 'pid' ({pid})"),
                ),
            }
        }
        ("POST", ["nodes", _, "vzdump"]) => vzdump(st, &node, p, is_root),
        ("GET", ["nodes", _, "storage", _, "content"]) => {
            let s = vars["storage"].clone();
            let Some((_, vols)) = st.storages.get(&s) else {
                return err(false, 500, &format!("storage '{s}' does not exist"));
            };
            let want = p.get("vmid").cloned();
            let list: Vec<Value> = vols
                .iter()
                .filter(|v| {
                    want.as_ref()
                        .is_none_or(|w| v["vmid"].to_string().trim_matches('"') == w)
                })
                .cloned()
                .collect();
            ok(json!(list))
        }
        ("DELETE", ["nodes", _, "storage", _, "content", _]) => {
            let s = vars["storage"].clone();
            let vol = vars["volume"].clone();
            if !st.storages[&s].1.iter().any(|v| v["volid"] == vol.as_str()) {
                return err(false, 500, &format!("volume '{vol}' does not exist"));
            }
            // Without `delay`, PVE answers with the UPID of an imgdel task.
            let upid = new_task(
                st,
                &node,
                "imgdel",
                "",
                None,
                "OK",
                vec![format!("Removed volume '{vol}'")],
                vec![Effect::RemoveVolume(s, vol.clone())],
                false,
            );
            ok(json!(upid))
        }
        ("POST", ["nodes", _, kind]) if *kind == "qemu" || *kind == "lxc" => {
            restore(st, &node, kind, p)
        }
        ("GET", ["nodes", _, "vzdump", "extractconfig"]) => {
            let vol = p["volume"].clone();
            let exists = st
                .storages
                .values()
                .any(|(_, vols)| vols.iter().any(|x| x["volid"] == vol.as_str()));
            if !exists {
                return err(false, 500, &format!("volume '{vol}' does not exist"));
            }
            let conf = archive_conf(st, &vol);
            let mut text = String::from("#backed up by vzdump\n");
            for (k, v) in &conf {
                text.push_str(&format!("{k}: {v}\n"));
            }
            // A snapshot section after the current config.
            text.push_str("\n[before-upgrade]\nname: old\n");
            ok(json!(text))
        }
        ("GET", [_, _, _, _, "config"]) => {
            let v = vmid.unwrap();
            let mut conf = guest_conf(st, v);
            conf.insert(
                "digest".into(),
                "0123456789abcdef0123456789abcdef01234567".into(),
            );
            ok(json!(conf))
        }
        ("PUT", [_, _, kind, _, "config"]) => {
            let v = vmid.unwrap();
            if let Some(l) = &st.guests[&v].lock {
                let label = if *kind == "qemu" { "VM" } else { "CT" };
                return err(false, 500, &format!("{label} is locked ({l})"));
            }
            let mut conf = guest_conf(st, v);
            if let Some(d) = p.get("delete") {
                for k in d.split([',', ';', ' ']).filter(|k| !k.is_empty()) {
                    conf.remove(k);
                }
            }
            for (k, val) in p
                .iter()
                .filter(|(k, _)| !["delete", "digest"].contains(&k.as_str()))
            {
                conf.insert(k.clone(), val.clone());
            }
            let name_key = if *kind == "qemu" { "name" } else { "hostname" };
            if let Some(n) = conf.get(name_key).cloned() {
                st.guests.get_mut(&v).unwrap().name = n;
            }
            st.configs.insert(v, conf);
            ok(Value::Null)
        }
        ("GET", [_, _, "qemu", _, "agent", "network-get-interfaces"])
        | ("POST", [_, _, "qemu", _, "agent", "ping"]) => {
            let v = vmid.unwrap();
            if st.guests[&v].status != "running" {
                return err(false, 500, &format!("VM {v} is not running"));
            }
            let on = guest_conf(st, v)
                .get("agent")
                .is_some_and(|a| a == "1" || a.contains("enabled=1"));
            if !on {
                return err(false, 500, "No QEMU guest agent configured");
            }
            if method == "POST" {
                return ok(json!({"result": {}}));
            }
            ok(json!({ "result": interfaces(st, v) }))
        }
        ("GET", [_, _, "lxc", _, "interfaces"]) => {
            let v = vmid.unwrap();
            if st.guests[&v].status != "running" {
                return err(false, 500, &format!("CT {v} not running"));
            }
            let mut list = interfaces(st, v);
            for i in list.iter_mut() {
                i["hwaddr"] = i["hardware-address"].clone();
                let v4 = i["ip-addresses"]
                    .as_array()
                    .and_then(|a| a.iter().find(|x| x["ip-address-type"] == "ipv4"))
                    .map(|x| format!("{}/{}", x["ip-address"].as_str().unwrap_or(""), x["prefix"]));
                if let Some(v4) = v4 {
                    i["inet"] = json!(v4);
                }
            }
            ok(json!(list))
        }
        _ => err(
            false,
            501,
            &format!("Method '{method} {path}' not implemented in the fake"),
        ),
    }
}

fn vzdump(
    st: &mut State,
    node: &str,
    p: &BTreeMap<String, String>,
    is_root: bool,
) -> (u16, String, String) {
    if p.contains_key("dumpdir") && !is_root {
        return (
            400,
            "Parameter verification failed.".into(),
            json!({"data": null, "errors": {"dumpdir": "Only root may set this option."}})
                .to_string(),
        );
    }
    if p.contains_key("dumpdir") && p.contains_key("storage") {
        return err(
            false,
            400,
            "cannot use options 'storage' and 'dumpdir' at the same time",
        );
    }
    let v: u32 = p.get("vmid").and_then(|s| s.parse().ok()).unwrap_or(0);
    if let Some(lock) = st.lock_race.remove(&v) {
        // Another client's snapshot took the guest after our lock check.
        let w = if st.guests.get(&v).is_some_and(|g| g.kind == "qemu") {
            "qmsnapshot"
        } else {
            "vzsnapshot"
        };
        st.hold_lock(v, lock, w, &v.to_string(), 700);
    }
    let Some(g) = st.guests.get(&v).cloned() else {
        return ok(json!("OK"));
    };
    if g.node != node {
        return ok(json!("OK"));
    }
    let (kind, label) = if g.kind == "qemu" {
        ("qemu", "vm")
    } else {
        ("lxc", "ct")
    };
    let now = chrono::Utc::now();
    let mut log = vec![format!("INFO: Starting Backup of VM {v} ({kind})")];
    let mut effects = vec![];
    let ext = if kind == "qemu" { "vma" } else { "tar" };
    let file = format!(
        "vzdump-{kind}-{v}-{}.{ext}.zst",
        now.format("%Y_%m_%d-%H_%M_%S")
    );
    // The storage's own retention, or the one given, limits the count
    // unless vzdump may prune (remove, default 1).
    let remove = p.get("remove").map(String::as_str) != Some("0");
    let mut limit: Option<(String, usize, usize)> = None;
    if let Some(dir) = p.get("dumpdir") {
        let path = format!("{dir}/{file}");
        log.push(format!("INFO: creating vzdump archive '{path}'"));
        if !st.remote_dumpdir {
            effects.push(Effect::WriteFile(path.into()));
        }
    } else {
        let s = p.get("storage").cloned().unwrap_or_else(|| "local".into());
        let Some((is_pbs, vols)) = st.storages.get(&s) else {
            return err(false, 500, &format!("storage '{s}' does not exist"));
        };
        let policy = p.get("prune-backups").cloned().or_else(|| {
            st.storage_conf
                .get(&s)
                .and_then(|c| c["prune-backups"].as_str().map(str::to_string))
        });
        if let Some(policy) = policy.filter(|p| !p.contains("keep-all=1")) {
            let n: usize = policy
                .split(',')
                .filter_map(|kv| kv.split_once('=')?.1.parse::<usize>().ok())
                .sum();
            let have = vols
                .iter()
                .filter(|x| x["vmid"].to_string().trim_matches('"') == v.to_string())
                .count();
            limit = Some((s.clone(), n, have));
        }
        let is_pbs = *is_pbs;
        let vol = if is_pbs {
            let snap = format!("{label}/{v}/{}", now.format("%Y-%m-%dT%H:%M:%SZ"));
            log.push(format!(
                "INFO: creating Proxmox Backup Server archive '{snap}'"
            ));
            json!({"volid": format!("{s}:backup/{snap}"), "format": format!("pbs-{label}"), "size": 123456, "ctime": now.timestamp(), "vmid": v, "content": "backup", "subtype": kind, "verification": {"state": "ok", "upid": "UPID:pbs:00000001:00000002:00000003:68A60E01:verify:x:root@pam:"}, "notes": p.get("notes-template").cloned()})
        } else {
            log.push(format!(
                "INFO: creating vzdump archive '/var/lib/vz/dump/{file}'"
            ));
            json!({"volid": format!("{s}:backup/{file}"), "format": format!("{ext}.zst"), "size": "654321", "ctime": now.timestamp().to_string(), "vmid": v.to_string(), "content": "backup", "subtype": kind, "protected": p.get("protected").map(|x| x == "1")})
        };
        effects.push(Effect::AddVolume(s, vol));
    }
    let over = limit
        .as_ref()
        .filter(|(_, n, have)| !remove && *n > 0 && have >= n);
    let exit = if let Some((_, n, _)) = over {
        log.push(format!("ERROR: Backup of VM {v} failed - There is a max backup limit of {n} enforced by the target storage or the vzdump parameters. Either increase the limit or delete old backup(s)."));
        log.push("INFO: Backup job finished with errors".into());
        "job errors".to_string()
    } else if st.fail_vzdump.contains(&v) {
        log.push(format!(
            "ERROR: Backup of VM {v} failed - unable to read disk: I/O error"
        ));
        log.push("INFO: Backup job finished with errors".into());
        "job errors".to_string()
    } else if g.lock.is_some() {
        log.push(format!(
            "ERROR: Backup of VM {v} failed - VM is locked ({})",
            g.lock.clone().unwrap()
        ));
        "job errors".to_string()
    } else if st.warn_vzdump.contains(&v) {
        log.push("WARN: EFI certificates are old".into());
        "WARNINGS: 1".to_string()
    } else {
        log.push("INFO: archive file size: 1.50GB".into());
        log.push("INFO: Backup job finished successfully".into());
        "OK".to_string()
    };
    if let (Some((s, n, _)), true) = (&limit, remove) {
        effects.push(Effect::PruneTo(s.clone(), v, *n));
    }
    if exit == "OK" || exit.starts_with("WARNINGS") {
        st.guests.get_mut(&v).unwrap().lock = Some("backup".into());
        effects.push(Effect::Unlock(v));
    }
    let upid = new_task(
        st,
        node,
        "vzdump",
        &v.to_string(),
        Some(v),
        &exit,
        log,
        effects,
        false,
    );
    ok(json!(upid))
}

fn restore(
    st: &mut State,
    node: &str,
    kind: &str,
    p: &BTreeMap<String, String>,
) -> (u16, String, String) {
    let v: u32 = p["vmid"].parse().unwrap();
    let archive = if kind == "qemu" {
        p.get("archive")
    } else {
        p.get("ostemplate")
    };
    let Some(archive) = archive.cloned() else {
        return err(false, 500, "no archive");
    };
    if kind == "lxc" && p.get("restore").map(String::as_str) != Some("1") {
        return err(
            false,
            500,
            "ostemplate is not a backup without restore=1 (fake)",
        );
    }
    if kind == "lxc" && p.get("storage").is_none_or(|s| s == "local") {
        return (400, "Parameter verification failed.".into(), json!({"data": null, "errors": {"storage": "storage 'local' does not support container directories"}}).to_string());
    }
    if st.guests.contains_key(&v) && p.get("force").map(String::as_str) != Some("1") {
        return err(
            false,
            500,
            &format!("unable to restore VM {v} - VM {v} already exists on node '{node}'"),
        );
    }
    let exists = st
        .storages
        .values()
        .any(|(_, vols)| vols.iter().any(|x| x["volid"] == archive.as_str()));
    if !exists {
        return err(false, 500, &format!("volume '{archive}' does not exist"));
    }
    let of_lxc = archive.contains("vzdump-lxc-") || archive.contains(":backup/ct/");
    if of_lxc != (kind == "lxc") {
        return err(
            false,
            500,
            &format!("'{archive}' is not a backup of a {kind} guest"),
        );
    }
    // The backed-up config, with the options given along (qemu-server's
    // override_conf, pve-container's restore options) over it.
    let mut conf = archive_conf(st, &archive);
    let not_config = [
        "vmid",
        "archive",
        "ostemplate",
        "restore",
        "storage",
        "unique",
        "force",
        "start",
        "bwlimit",
        "pool",
        "live-restore",
    ];
    for (k, val) in p.iter().filter(|(k, _)| !not_config.contains(&k.as_str())) {
        conf.insert(k.clone(), val.clone());
    }
    if p.get("unique").map(String::as_str) == Some("1") {
        // New MAC addresses.
        st.counter += 1;
        let n = st.counter;
        for (k, val) in conf.iter_mut().filter(|(k, _)| k.starts_with("net")) {
            *val = val
                .split(',')
                .map(|item| match item.split_once('=') {
                    Some((key, mac)) if mac.len() == 17 && mac.matches(':').count() == 5 => {
                        format!(
                            "{key}=BC:24:11:FE:{n:02X}:{:02X}",
                            k[3..].parse::<u8>().unwrap_or(0)
                        )
                    }
                    _ => item.to_string(),
                })
                .collect::<Vec<_>>()
                .join(",");
        }
    }
    let name_key = if kind == "qemu" { "name" } else { "hostname" };
    let g = Guest {
        kind: if kind == "qemu" { "qemu" } else { "lxc" },
        node: node.into(),
        name: conf
            .get(name_key)
            .cloned()
            .unwrap_or_else(|| format!("restored-{v}")),
        status: "stopped".into(),
        lock: None,
        snapshots: vec![],
    };
    let w = if kind == "qemu" {
        "qmrestore"
    } else {
        "vzrestore"
    };
    let upid = new_task(
        st,
        node,
        w,
        &v.to_string(),
        Some(v),
        "OK",
        vec![format!("restoring '{archive}'")],
        vec![Effect::CreateGuest(v, g), Effect::SetConfig(v, conf)],
        false,
    );
    ok(json!(upid))
}

/// The configuration inside a backup volume.
fn archive_conf(st: &State, volid: &str) -> GuestConf {
    if let Some(c) = st.archive_configs.get(volid) {
        return c.clone();
    }
    let lxc = volid.contains("vzdump-lxc-") || volid.contains(":backup/ct/");
    let pairs: &[(&str, &str)] = if lxc {
        &[
            ("arch", "amd64"),
            ("hostname", "nextcloud"),
            ("memory", "2048"),
            ("net0", "name=eth0,bridge=vmbr0,hwaddr=BC:24:11:00:02:00,ip=192.168.1.20/24,gw=192.168.1.1,type=veth"),
            ("onboot", "1"),
            ("ostype", "debian"),
            ("rootfs", "local-lvm:vm-200-disk-0,size=8G"),
            ("tags", "prod"),
        ]
    } else {
        &[
            ("agent", "1"),
            ("memory", "2048"),
            ("name", "web"),
            ("net0", "virtio=BC:24:11:00:01:00,bridge=vmbr0,firewall=1"),
            (
                "net1",
                "virtio=BC:24:11:00:01:01,bridge=vmbr0,tag=20,trunks=20;30",
            ),
            ("onboot", "1"),
            ("protection", "1"),
            ("scsi0", "local-lvm:vm-100-disk-0,size=32G"),
            ("tags", "prod"),
        ]
    };
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A guest's configuration: the one held, or a minimal one of its kind.
/// A running guest's interfaces as the QEMU agent's
/// `network-get-interfaces` lists them: `lo`, and `eth0` with its address.
fn interfaces(st: &State, v: u32) -> Vec<Value> {
    let addr = st
        .addresses
        .get(&v)
        .cloned()
        .unwrap_or_else(|| format!("10.99.0.{}", 10 + v % 200));
    vec![
        json!({"name": "lo", "hardware-address": "00:00:00:00:00:00", "ip-addresses": [
            {"ip-address": "127.0.0.1", "ip-address-type": "ipv4", "prefix": 8},
            {"ip-address": "::1", "ip-address-type": "ipv6", "prefix": 128}]}),
        json!({"name": "eth0", "hardware-address": "BC:24:11:AA:00:01", "ip-addresses": [
            {"ip-address": "fe80::be24:11ff:feaa:1", "ip-address-type": "ipv6", "prefix": 64},
            {"ip-address": addr, "ip-address-type": "ipv4", "prefix": 24}]}),
    ]
}

fn guest_conf(st: &State, v: u32) -> GuestConf {
    if let Some(c) = st.configs.get(&v) {
        return c.clone();
    }
    let g = &st.guests[&v];
    let name_key = if g.kind == "qemu" { "name" } else { "hostname" };
    GuestConf::from([
        (name_key.to_string(), g.name.clone()),
        ("memory".to_string(), "2048".to_string()),
    ])
}

fn pbs_route(
    st: &mut State,
    method: &str,
    path: &str,
    p: &BTreeMap<String, String>,
    vars: &BTreeMap<String, String>,
) -> (u16, String, String) {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match (method, segs.as_slice()) {
        ("GET", ["admin", "datastore", _, "snapshots"]) => {
            let list: Vec<Value> = st
                .pbs_snapshots
                .iter()
                .filter(|s| {
                    p.get("backup-type")
                        .is_none_or(|t| s["backup-type"] == t.as_str())
                        && p.get("backup-id")
                            .is_none_or(|i| s["backup-id"] == i.as_str())
                })
                .cloned()
                .collect();
            ok(json!(list))
        }
        ("GET", ["admin", "datastore", _, "status"]) => ok(
            json!({"total": 1000000, "used": 250000, "avail": 750000, "backend-type": "filesystem"}),
        ),
        ("POST", ["admin", "datastore", store, "verify"]) => {
            let (exit, state) = if st.pbs_verify_fails {
                (
                    "verification failed - please check the log for details",
                    "failed",
                )
            } else {
                ("OK", "ok")
            };
            let upid = new_task(
                st,
                "pbs",
                "verify",
                store,
                None,
                exit,
                vec!["verify group".into()],
                vec![],
                true,
            );
            // The snapshots verified record the job's outcome and UPID.
            let time = p.get("backup-time").cloned();
            for snap in st.pbs_snapshots.iter_mut().filter(|s| {
                p.get("backup-type")
                    .is_none_or(|t| s["backup-type"] == t.as_str())
                    && p.get("backup-id")
                        .is_none_or(|i| s["backup-id"] == i.as_str())
                    && time
                        .as_ref()
                        .is_none_or(|t| t.parse::<i64>().ok() == s["backup-time"].as_i64())
            }) {
                snap["verification"] = json!({"state": state, "upid": upid});
            }
            ok(json!(upid))
        }
        ("POST", ["admin", "datastore", _, "prune"]) => {
            let list: Vec<Value> = st.pbs_snapshots.iter().enumerate().map(|(i, s)| json!({"backup-type": s["backup-type"], "backup-id": s["backup-id"], "backup-time": s["backup-time"], "keep": i == st.pbs_snapshots.len() - 1})).collect();
            ok(json!(list))
        }
        ("GET", ["nodes", _, "tasks", _, "status"]) => {
            let upid = vars.get("upid").cloned().unwrap_or_default();
            match st.tasks.get(&upid) {
                None => err(true, 400, "no such task"),
                Some(t) if t.done => ok(
                    json!({"upid": upid, "node": t.node, "status": "stopped", "exitstatus": t.exit, "pid": 1, "pstart": 1, "starttime": 1, "type": "verify", "user": TOKEN_ID}),
                ),
                Some(t) => ok(
                    json!({"upid": upid, "node": t.node, "status": "running", "pid": 1, "pstart": 1, "starttime": 1, "type": "verify", "user": TOKEN_ID}),
                ),
            }
        }
        _ => err(
            true,
            501,
            &format!("Method '{method} {path}' not implemented in the fake"),
        ),
    }
}

/// What a command of the Debian model prints and exits with; `None` when
/// the program does not exist in the guest.
fn agent_command(os: &mut GuestOs, argv: &[String]) -> Option<Value> {
    let a: Vec<&str> = argv.iter().map(String::as_str).collect();
    let done = |code: i64, out: &str| json!({"exited": true, "exitcode": code, "out-data": out});
    match a.as_slice() {
        ["cat", "/etc/os-release"] => Some(done(0, &os.os_release)),
        ["apt-get", "--version"] => Some(done(0, "apt 2.6.1 (amd64)\n")),
        ["apt-get", "update"] => Some(done(
            0,
            "Hit:1 http://deb.debian.org/debian bookworm InRelease\nReading package lists...\n",
        )),
        ["apt-get", "-s", "dist-upgrade"] => {
            let out = if os.version == os.available {
                "Reading package lists...\n0 upgraded, 0 newly installed, 0 to remove and 0 not upgraded.\n".to_string()
            } else {
                format!(
                    "Reading package lists...\nInst webapp [{}] ({} Debian:12/stable [amd64])\nConf webapp ({} Debian:12/stable [amd64])\n",
                    os.version, os.available, os.available
                )
            };
            Some(done(0, &out))
        }
        ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", rest @ ..]
            if rest.contains(&"-y") && rest.last() == Some(&"dist-upgrade") =>
        {
            os.version = os.available.clone();
            os.write_health();
            Some(done(0, "Setting up webapp ...\n"))
        }
        // Only webapp is a package of this model.
        ["dpkg-query", "-W", "-f", "${Package} ${Version}\\n", "--", names @ ..] => {
            let mut out = String::new();
            let mut err = String::new();
            for n in names {
                if *n == "webapp" {
                    out.push_str(&format!("webapp {}\n", os.version));
                } else {
                    err.push_str(&format!("dpkg-query: no packages found matching {n}\n"));
                }
            }
            let code = if err.is_empty() { 0 } else { 1 };
            Some(json!({"exited": true, "exitcode": code, "out-data": out, "err-data": err}))
        }
        [prog, ..] if ["apt-get", "env", "cat", "dpkg-query"].contains(prog) => {
            Some(json!({"exited": true, "exitcode": 100, "err-data": "E: Invalid operation\n"}))
        }
        _ => None,
    }
}

//! The shoutrrr and Apprise URL forms of every chat and push service,
//! through the real binary: each service's API is a local HTTP(S) server on
//! 127.0.0.1 that records what it got (the request shapes the services
//! document), email goes to a real SMTP server, and each receiver's text
//! is read: real line breaks, no JSON, the title and priority the service
//! takes.

use crate::harness::free_port;
use crate::harness::Test;
use crate::notify::{
    assert_nowhere, ok, smtp_server, tls_cert, wait_for_mail, Receiver, Reply, Req,
};
use serde_json::json;

/// Secrets of the URLs below: each must reach only its own request line or
/// header, never the output, the logs or the state DB.
const SECRETS: &[&str] = &[
    "TGSECRETq1w2e3",
    "BOTSECRETa9s8d7",
    "MXPASSz1x2c3v4",
    "ZKEYp0o9i8u7",
    "OGKEYl1k2j3h4",
    "PBTOKENm5n6b7v8",
    "APPTOKENr4t5y6",
    "DEVKEYg7h8j9k0",
];

/// A human text: several real lines, no escaped line break, no JSON.
#[track_caller]
fn assert_clean(what: &str, s: &str) {
    assert!(s.contains('\n'), "{what}: one line only: {s:?}");
    assert!(!s.contains("\\n"), "{what}: literal \\n: {s:?}");
    assert!(!s.contains("{\""), "{what}: raw JSON: {s:?}");
    assert!(
        s.contains("broken: "),
        "{what}: no failed service line: {s:?}"
    );
}

fn one(rx: &Receiver, prefix: &str) -> Req {
    let r = rx.on(prefix);
    assert_eq!(r.len(), 1, "{prefix}: {:?}", rx.requests());
    r.into_iter().next().unwrap()
}

fn json_ok() -> Reply {
    Reply::Status(200, vec![], r#"{"ok":true,"result":{}}"#.into())
}

#[test]
fn a_failed_backup_reads_cleanly_in_every_service() {
    let t = Test::new();
    let rx = Receiver::start(ok());
    let api = Receiver::start(json_ok());
    let refused = Receiver::start(Reply::Status(
        200,
        vec![],
        r#"{"ok":false,"error":"channel_not_found"}"#.into(),
    ));
    let tls = tls_cert(30);
    let rxs = Receiver::start_tls(ok(), &tls);
    t.write("ca.pem", &tls.ca_pem);
    let mx = Receiver::start(ok());
    mx.push(Reply::Status(
        200,
        vec![],
        r#"{"access_token":"mxaccessTOKEN77","user_id":"@bot:m"}"#.into(),
    ));
    mx.push(Reply::Status(
        200,
        vec![],
        r#"{"room_id":"!room1:m"}"#.into(),
    ));
    mx.push(Reply::Status(200, vec![], r#"{"event_id":"$e1"}"#.into()));
    let maildir = t.path("maildir");
    let smtp = smtp_server(&maildir);
    let (p, ps, pm, pa, pr) = (rx.port, rxs.port, mx.port, api.port, refused.port);
    let mail_port = smtp.as_ref().map(|s| s.1).unwrap_or_else(free_port);
    t.write("data/web/index.html", "hello");
    t.write("data/broken/f", "x");
    // The service's own step fails, as a full disk or a failing hook would.
    t.script(
        "services/broken.rhai",
        "fn pre_backup(svc, ctx) { throw \"disk on fire\"; }\n",
    );
    t.config(&format!(
        r#"global:
  backup:
    root: {{root}}/backups
notifications:
  channels:
    - name: ntfy
      url: ntfy://127.0.0.1:{p}/alerts?scheme=http
    - name: gotify
      url: gotify://127.0.0.1:{p}/gotify/AppTok3nXYZ?disabletls=yes
    - name: tg
      url: tgram://111:TGSECRETq1w2e3/@chan_a/-1001
      api_url: http://127.0.0.1:{pa}/tg
    - name: slackbot
      url: slack://xoxb:111-222-BOTSECRETa9s8d7@C0123
      api_url: http://127.0.0.1:{pa}/slack
    - name: slackbad
      url: slack://xoxb-111-222-BOTSECRETa9s8d7/#gone
      api_url: http://127.0.0.1:{pr}
    - name: teams
      url: teams://g1@t1/alt1/owner1/extra1?host=127.0.0.1:{ps}
    - name: mm
      url: mmost://autobot@127.0.0.1:{p}/mm/MMTOKEN1?channel=ops
    - name: gchat
      url: gchat://SPACE1/GKEY1/GTOKEN1
      api_url: http://127.0.0.1:{p}/gc
    - name: rocket
      url: rocket://TA1%2FTB1@127.0.0.1:{p}/#ops
    - name: zulip
      url: zulip://bot%40z.lan:ZKEYp0o9i8u7@127.0.0.1:{ps}/?stream=ops&topic=backups
    - name: bark
      url: bark://:DEVKEYg7h8j9k0@127.0.0.1:{p}/bark?scheme=http
    - name: opsgenie
      url: opsgenie://OGKEYl1k2j3h4
      api_url: http://127.0.0.1:{p}/og
    - name: pbul
      url: pbul://PBTOKENm5n6b7v8/dev1/#chan1
      api_url: http://127.0.0.1:{p}/pb
    - name: pover
      url: pover://USERKEY1@APPTOKENr4t5y6
      api_url: http://127.0.0.1:{p}/po
    - name: matrix
      url: matrix://bot:MXPASSz1x2c3v4@127.0.0.1:{pm}/?rooms=ops&disableTLS=yes
    - name: mail
      url: mailto://127.0.0.1:{mail_port}?from=autopilot@example.org&to=admin@example.org
services:
  - name: web
    type: generic
    backup_paths: [{{root}}/data/web]
  - name: broken
    type: generic
    backup_paths: [{{root}}/data/broken]
"#
    ));
    let out = t
        .command(&["run", "backup"])
        .env("SSL_CERT_FILE", t.path("ca.pem"))
        .output()
        .unwrap();
    let run = crate::harness::Run::from_output(out);
    run.code(1);

    // ntfy: the title in the header, the body without JSON or escapes.
    let n = one(&rx, "/alerts");
    assert!(n.header("Title").unwrap().starts_with("FAILED backup on "));
    assert_eq!(n.header("Priority"), Some("high"));
    assert_clean("ntfy", &n.text());
    assert!(
        !n.text().contains("FAILED backup on"),
        "title repeated: {}",
        n.text()
    );

    let g = one(&rx, "/gotify/message");
    assert_eq!(g.header("X-Gotify-Key"), Some("AppTok3nXYZ"));
    assert_eq!(g.json()["priority"], 8);
    assert_clean("gotify", g.json()["message"].as_str().unwrap());

    // Telegram: one sendMessage per chat listed.
    let tg = api.on("/tg/bot111:TGSECRETq1w2e3/sendMessage");
    let chats: Vec<_> = tg.iter().map(|r| r.json()["chat_id"].clone()).collect();
    assert_eq!(
        chats,
        [json!("@chan_a"), json!("-1001")],
        "{:?}",
        api.requests()
    );
    assert_clean("telegram", tg[0].json()["text"].as_str().unwrap());

    // Slack bot token: the Web API, not a webhook.
    let s = one(&api, "/slack/api/chat.postMessage");
    assert_eq!(
        s.header("Authorization"),
        Some("Bearer xoxb-111-222-BOTSECRETa9s8d7")
    );
    assert_eq!(s.json()["channel"], "C0123");
    assert!(s.json()["text"]
        .as_str()
        .unwrap()
        .starts_with("FAILED backup"));
    // ...and an API that answers 200 with ok:false is a failed delivery.
    assert_eq!(refused.on("/api/chat.postMessage").len(), 1);
    assert!(
        run.stderr.contains("channel_not_found") || run.stdout.contains("channel_not_found"),
        "{}\n{}",
        run.stdout,
        run.stderr
    );

    let tm = one(&rxs, "/webhookb2/g1@t1/IncomingWebhook/alt1/owner1/extra1");
    let tj = tm.json();
    assert_eq!(tj["@type"], "MessageCard");
    assert_eq!(tj["themeColor"], "E74C3C");
    assert!(tj["title"]
        .as_str()
        .unwrap()
        .starts_with("FAILED backup on "));
    assert_clean("teams", tj["sections"][0]["text"].as_str().unwrap());

    let mm = one(&rx, "/mm/hooks/MMTOKEN1");
    assert_eq!(mm.json()["channel"], "ops");
    assert_eq!(mm.json()["username"], "autobot");
    assert_clean("mattermost", mm.json()["text"].as_str().unwrap());

    let gc = one(&rx, "/gc/v1/spaces/SPACE1/messages");
    assert_eq!(
        gc.path,
        "/gc/v1/spaces/SPACE1/messages?key=GKEY1&token=GTOKEN1"
    );
    assert_clean("googlechat", gc.json()["text"].as_str().unwrap());

    let rc = one(&rx, "/hooks/TA1/TB1");
    assert_eq!(rc.json()["channel"], "#ops");
    assert_clean("rocketchat", rc.json()["text"].as_str().unwrap());

    // Zulip: a form-encoded stream message, basic auth.
    let z = one(&rxs, "/api/v1/messages");
    use base64::Engine as _;
    let basic = base64::engine::general_purpose::STANDARD.encode("bot@z.lan:ZKEYp0o9i8u7");
    assert_eq!(
        z.header("Authorization"),
        Some(format!("Basic {basic}").as_str())
    );
    let form: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(&z.body).into_owned().collect();
    assert_eq!(form["type"], "stream");
    assert_eq!(form["to"], "ops");
    assert_eq!(form["topic"], "backups");
    assert_clean("zulip", &form["content"]);

    let b = one(&rx, "/bark/push");
    let bj = b.json();
    assert_eq!(bj["device_key"], "DEVKEYg7h8j9k0");
    assert_eq!(bj["level"], "timeSensitive");
    assert!(bj["title"]
        .as_str()
        .unwrap()
        .starts_with("FAILED backup on "));
    assert_clean("bark", bj["body"].as_str().unwrap());

    let og = one(&rx, "/og/v2/alerts");
    assert_eq!(og.header("Authorization"), Some("GenieKey OGKEYl1k2j3h4"));
    assert_eq!(og.json()["priority"], "P1");
    assert!(og.json()["message"].as_str().unwrap().chars().count() <= 130);
    assert_clean("opsgenie", og.json()["description"].as_str().unwrap());

    // Pushbullet: one note per target.
    let pb = rx.on("/pb/v2/pushes");
    assert_eq!(pb.len(), 2, "{:?}", rx.requests());
    assert!(pb
        .iter()
        .all(|r| r.header("Access-Token") == Some("PBTOKENm5n6b7v8")));
    let targets: Vec<_> = pb
        .iter()
        .map(|r| {
            (
                r.json()["device_iden"].clone(),
                r.json()["channel_tag"].clone(),
            )
        })
        .collect();
    assert!(
        targets.contains(&(json!("dev1"), json!(null))),
        "{targets:?}"
    );
    assert!(
        targets.contains(&(json!(null), json!("chan1"))),
        "{targets:?}"
    );
    assert_clean("pushbullet", pb[0].json()["body"].as_str().unwrap());

    let po = one(&rx, "/po/1/messages.json");
    assert_eq!(po.json()["user"], "USERKEY1");
    assert_eq!(po.json()["token"], "APPTOKENr4t5y6");
    assert_eq!(po.json()["priority"], 1);
    assert_clean("pushover", po.json()["message"].as_str().unwrap());

    // Matrix: log in, join the room (an alias on this host), send to it.
    let mr = mx.requests();
    let steps: Vec<(&str, &str)> = mr
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str()))
        .collect();
    assert_eq!(steps.len(), 3, "{steps:?}");
    assert_eq!(steps[0], ("POST", "/_matrix/client/v3/login"));
    assert_eq!(mr[0].json()["password"], "MXPASSz1x2c3v4");
    assert_eq!(
        steps[1],
        ("POST", "/_matrix/client/v3/join/%23ops%3A127.0.0.1")
    );
    assert_eq!(steps[2].0, "PUT");
    assert!(
        steps[2]
            .1
            .starts_with("/_matrix/client/v3/rooms/%21room1%3Am/send/m.room.message/"),
        "{steps:?}"
    );
    assert_eq!(
        mr[2].header("Authorization"),
        Some("Bearer mxaccessTOKEN77")
    );
    assert_eq!(mr[2].json()["msgtype"], "m.text");
    assert_clean("matrix", mr[2].json()["body"].as_str().unwrap());

    // Email (Apprise mailto://, plain SMTP): a clean text body.
    if let Some((mut child, _)) = smtp {
        let mails = wait_for_mail(&maildir);
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(mails.len(), 1);
        let m = &mails[0];
        assert!(m.contains("To: admin@example.org"), "{m}");
        let body = m
            .split("\r\n\r\n")
            .nth(1)
            .or_else(|| m.split("\n\n").nth(1))
            .unwrap();
        assert!(!body.contains("\\n") && !body.contains("{\""), "{body}");
        assert!(body.contains("broken: "), "{body}");
    }

    for s in SECRETS {
        assert_nowhere(&t, s, &[&run.stdout, &run.stderr]);
    }
    assert_nowhere(&t, "mxaccessTOKEN77", &[&run.stdout, &run.stderr]);
}

#[test]
fn apprise_and_unknown_schemes_are_refused_naming_what_to_use() {
    let t = Test::new();
    t.config(
        "notifications:\n  channels:\n    - name: a\n      url: xmls://hook.lan/x\n    - name: b\n      url: signal://x/y\n    - name: c\n      type: webhook\n      url: ntfys://n.lan/t\n    - name: d\n      url: rockets://user:pw@rc.lan\nservices: []\n",
    );
    let run = t.run(&["config", "validate"]);
    run.code(78);
    let e = &run.stderr;
    assert!(
        e.contains("channels[0].url: URL scheme 'xmls' is not supported: only JSON webhooks"),
        "{e}"
    );
    assert!(e.contains("use json://"), "{e}");
    assert!(e.contains("channels[1].url: URL scheme 'signal' is not supported: this service has no channel: use a command channel"), "{e}");
    assert!(e.contains("channels[2].url: URL scheme 'ntfys' is not supported: this Apprise scheme is accepted only by the channel type it maps to"), "{e}");
    assert!(e.contains("channels[3].url: rockets:// URL is incomplete: only the incoming-webhook form is supported"), "{e}");
    // Secrets in a refused URL are not echoed.
    assert!(!e.contains(":pw@"), "{e}");
}

#[test]
fn every_telegram_chat_is_tried_and_one_refusal_fails_the_delivery() {
    let t = Test::new();
    let api = Receiver::start(json_ok());
    api.push(json_ok());
    api.push(Reply::Status(
        400,
        vec![],
        r#"{"ok":false,"error_code":400,"description":"Bad Request: chat not found"}"#.into(),
    ));
    t.config(&format!(
        "notifications:\n  channels:\n    - name: tg\n      url: telegram://111:TGSECRETq1w2e3@telegram?chats=@a,@gone,@c\n      api_url: http://127.0.0.1:{}\nservices: []\n",
        api.port
    ))
    .script(
        "notifytest.rhai",
        &crate::notify::sender(&[("service_down", r#"#{ summary: "web is down", service: "web" }"#)]),
    );
    let run = t.run(&["run", "notifytest", "--json"]);
    run.code(0);
    let chats: Vec<_> = api
        .on("/bot111:TGSECRETq1w2e3/sendMessage")
        .iter()
        .map(|r| r.json()["chat_id"].clone())
        .collect();
    assert_eq!(chats, [json!("@a"), json!("@gone"), json!("@c")]);
    let doc: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let d = doc["deliveries"]
        .as_array()
        .or_else(|| doc["run"]["deliveries"].as_array())
        .unwrap_or_else(|| panic!("{doc}"));
    assert_eq!(d[0]["status"], "failed", "{doc}");
    let err = d[0]["error"].as_str().unwrap();
    assert!(err.contains("request 2 of 3: HTTP 400"), "{err}");
    assert!(err.contains("chat not found"), "{err}");
    assert_nowhere(&t, "TGSECRETq1w2e3", &[&run.stdout, &run.stderr]);
}

#[test]
fn matrix_with_an_access_token_and_no_rooms_sends_to_every_joined_room() {
    let t = Test::new();
    let mx = Receiver::start(ok());
    mx.push(Reply::Status(
        200,
        vec![],
        r#"{"joined_rooms":["!one:m","!two:m"]}"#.into(),
    ));
    mx.push(Reply::Status(200, vec![], r#"{"event_id":"$1"}"#.into()));
    mx.push(Reply::Status(200, vec![], r#"{"event_id":"$2"}"#.into()));
    t.config(&format!(
        "notifications:\n  channels:\n    - name: mx\n      url: matrix://:MXTOKENq9w8e7r6@127.0.0.1:{}/?disableTLS=yes\nservices: []\n",
        mx.port
    ))
    .script(
        "notifytest.rhai",
        &crate::notify::sender(&[("service_recovered", r#"#{ summary: "web is up again", service: "web" }"#)]),
    );
    let run = t.run(&["run", "notifytest"]);
    run.code(0);
    let r = mx.requests();
    let steps: Vec<(&str, &str)> = r
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str()))
        .collect();
    assert_eq!(steps.len(), 3, "{steps:?}");
    assert_eq!(steps[0], ("GET", "/_matrix/client/v3/joined_rooms"));
    assert!(steps[1]
        .1
        .starts_with("/_matrix/client/v3/rooms/%21one%3Am/send/m.room.message/"));
    assert!(steps[2]
        .1
        .starts_with("/_matrix/client/v3/rooms/%21two%3Am/send/m.room.message/"));
    assert_ne!(
        steps[1].1.rsplit('/').next(),
        steps[2].1.rsplit('/').next(),
        "one txn id per message"
    );
    assert!(r
        .iter()
        .all(|q| q.header("Authorization") == Some("Bearer MXTOKENq9w8e7r6")));
    // An info event is a notice; the text has the title and the summary.
    let c = r[1].json();
    assert_eq!(c["msgtype"], "m.notice");
    assert!(c["body"].as_str().unwrap().starts_with("RECOVERED web on "));
    assert!(c["body"].as_str().unwrap().contains("\nweb is up again"));
    assert_nowhere(&t, "MXTOKENq9w8e7r6", &[&run.stdout, &run.stderr]);
}

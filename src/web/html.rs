//! The status page, rendered on the server: plain HTML with inline CSS and
//! inline SVG charts; no script, no external resource. Every text that
//! comes from the configuration or the state DB goes through [`esc`]
//! (secrets masked, then HTML-escaped).

use super::data::{Chart, Health, Run, RunDetail, ServiceDetail, ServiceSummary, Status};
use crate::units::{human_bytes, local_time};
use std::fmt::Write;

/// Secrets masked, then escaped for HTML text and attribute values.
pub fn esc(s: &str) -> String {
    let s = crate::redact::scrub(s);
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A path segment, percent-encoded (service names in links).
fn seg(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:70em}\
table{border-collapse:collapse;margin:.5em 0}td,th{padding:.2em .6em;border-bottom:1px solid #ddd;\
text-align:left;vertical-align:top}.ok{color:#176f2c}.warning{color:#9a6700}.critical{color:#b42318}\
.unknown{color:#666}.health{font-size:1.6em;font-weight:bold}.badge{font-weight:bold}\
pre.log{background:#f6f6f6;padding:.5em;overflow-x:auto;white-space:pre-wrap}\
svg.chart{border:1px solid #ccc;background:#fff;margin:.3em 1em .3em 0}\
svg.chart polyline{fill:none;stroke:#2563eb;stroke-width:1.5}svg.chart circle{fill:#2563eb}\
svg.chart text{font-size:10px;fill:#444}nav a{margin-right:1em}";

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} – homelab-autopilot</title><style>{STYLE}</style></head>\n<body>\
         <nav><a href=\"/\">Overview</a><a href=\"/runs\">Runs</a>\
         <a href=\"/api/v1/status\">JSON</a><a href=\"/metrics\">Metrics</a></nav>\n{body}</body></html>\n",
        esc(title)
    )
}

fn badge(h: Health) -> String {
    format!(
        "<span class=\"badge {0}\">{1}</span>",
        h.as_str(),
        h.as_str().to_uppercase()
    )
}

fn run_status(r: &Run) -> String {
    let class = match r.run.status.as_str() {
        "success" => "ok",
        "warning" => "warning",
        "failed" | "aborted" => "critical",
        _ => "unknown",
    };
    format!("<span class=\"badge {class}\">{}</span>", r.run.status)
}

fn opt_time(t: Option<i64>) -> String {
    t.map(local_time).unwrap_or_else(|| "–".into())
}

fn secs(d: Option<f64>) -> String {
    d.map(|d| format!("{d:.0} s")).unwrap_or_else(|| "–".into())
}

fn pct(p: Option<f64>) -> String {
    p.map(|p| format!("{p:.2}%")).unwrap_or_else(|| "–".into())
}

fn runs_table(runs: &[Run], out: &mut String) {
    if runs.is_empty() {
        out.push_str("<p>No runs yet.</p>\n");
        return;
    }
    out.push_str(
        "<table class=\"runs\"><tr><th>Run</th><th>Workflow</th><th>Status</th>\
         <th>Started</th><th>Duration</th><th>Summary</th></tr>\n",
    );
    for r in runs {
        let _ = writeln!(
            out,
            "<tr class=\"run\" data-run=\"{id}\"><td><a href=\"/runs/{id}\">#{id}</a></td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&r.run.workflow),
            run_status(r),
            local_time(r.run.started_at),
            secs(r.duration_seconds),
            esc(&r.run.summary),
            id = r.run.id,
        );
    }
    out.push_str("</table>\n");
}

fn services_table(services: &[ServiceSummary], out: &mut String) {
    out.push_str(
        "<table class=\"services\"><tr><th>Service</th><th>Health</th><th>Type</th>\
         <th>Monitor</th><th>Uptime 24h / 7d / 30d</th><th>Last backup</th>\
         <th>Backups (verified)</th><th>Problems</th></tr>\n",
    );
    for s in services {
        let monitor = s
            .monitor
            .as_ref()
            .map(|m| esc(&m.state.to_uppercase()))
            .unwrap_or_else(|| "–".into());
        let uptime = s
            .monitor
            .as_ref()
            .map(|m| {
                format!(
                    "{} / {} / {}",
                    pct(m.uptime_24h),
                    pct(m.uptime_7d),
                    pct(m.uptime_30d)
                )
            })
            .unwrap_or_else(|| "–".into());
        let last = match &s.last_backup {
            Some(b) => format!("{} ({})", local_time(b.created_at), human_bytes(b.size)),
            None if s.backup => "never".into(),
            None => "backup off".into(),
        };
        let problems: Vec<String> = s.problems.iter().map(|p| esc(&p.message)).collect();
        let _ = writeln!(
            out,
            "<tr class=\"service\" data-service=\"{}\"><td><a href=\"/services/{}\">{}</a></td>\
             <td>{}</td><td>{}</td><td>{monitor}</td><td>{uptime}</td><td>{last}</td>\
             <td>{} ({})</td><td>{}</td></tr>",
            esc(&s.name),
            seg(&s.name),
            esc(&s.name),
            badge(s.health),
            esc(&s.service_type),
            s.backups,
            s.verified,
            problems.join("<br>"),
        );
    }
    out.push_str("</table>\n");
}

pub fn overview(st: &Status, recent: &[Run]) -> String {
    let mut b = String::new();
    let _ = writeln!(
        b,
        "<h1>homelab-autopilot</h1>\n<p class=\"health {0}\" id=\"health\" data-health=\"{0}\">\
         Overall: {1}</p>",
        st.health.as_str(),
        st.health.as_str().to_uppercase()
    );
    if !st.problems.is_empty() {
        b.push_str("<ul class=\"problems\">\n");
        for p in &st.problems {
            let _ = writeln!(
                b,
                "<li>{} <b>{}</b>: {}</li>",
                badge(p.health),
                esc(&p.subject),
                esc(&p.message)
            );
        }
        b.push_str("</ul>\n");
    }
    b.push_str("<h2>Services</h2>\n");
    services_table(&st.services, &mut b);
    b.push_str("<h2>Last run of each workflow</h2>\n");
    runs_table(&st.last_runs, &mut b);
    b.push_str("<h2>Recent runs</h2>\n");
    runs_table(recent, &mut b);
    let _ = writeln!(
        b,
        "<p class=\"generated\">Generated {}</p>",
        local_time(st.generated_at)
    );
    page("Status", &b)
}

pub fn runs(list: &[Run]) -> String {
    let mut b = String::from("<h1>Recent runs</h1>\n");
    runs_table(list, &mut b);
    page("Runs", &b)
}

pub fn service(d: &ServiceDetail) -> String {
    let s = &d.summary;
    let mut b = String::new();
    let _ = writeln!(
        b,
        "<h1>{}</h1>\n<p class=\"health {}\">{}</p>",
        esc(&s.name),
        s.health.as_str(),
        badge(s.health)
    );
    for p in &s.problems {
        let _ = writeln!(b, "<p>{} {}</p>", badge(p.health), esc(&p.message));
    }
    b.push_str("<h2>Charts</h2>\n<div class=\"charts\">");
    for c in &d.charts {
        b.push_str(&svg_chart(c));
    }
    b.push_str("</div>\n");
    if !d.checks.is_empty() {
        b.push_str(
            "<h2>Health checks</h2>\n<table class=\"checks\"><tr><th>Check</th><th>State</th>\
             <th>Since</th><th>Last checked</th><th>Message</th></tr>\n",
        );
        for c in &d.checks {
            let _ = writeln!(
                b,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&c.name),
                c.status,
                local_time(c.since),
                local_time(c.last_checked),
                esc(&c.message)
            );
        }
        b.push_str("</table>\n");
    }
    b.push_str("<h2>Backups</h2>\n");
    if d.history.backups.is_empty() {
        b.push_str("<p>No backups.</p>\n");
    } else {
        b.push_str(
            "<table class=\"backups\"><tr><th>ID</th><th>Created</th><th>Kind</th><th>Size</th>\
             <th>Duration</th><th>Status</th><th>Verified</th><th>Run</th><th>Location</th></tr>\n",
        );
        for e in &d.history.backups {
            let x = &e.backup;
            let run = x
                .run_id
                .map(|id| format!("<a href=\"/runs/{id}\">#{id}</a>"))
                .unwrap_or_else(|| "–".into());
            let _ = writeln!(
                b,
                "<tr class=\"backup\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
                 <td>{}</td><td>{}</td><td>{run}</td><td>{}</td></tr>",
                x.id,
                local_time(x.created_at),
                esc(&x.kind),
                human_bytes(x.size),
                secs(e.duration_seconds),
                x.status,
                opt_time(x.verified_at),
                esc(&x.location)
            );
        }
        b.push_str("</table>\n");
    }
    for (title, list) in [
        ("Updates", &d.history.updates),
        ("Restore tests", &d.history.restore_tests),
    ] {
        let _ = writeln!(b, "<h2>{title}</h2>");
        if list.is_empty() {
            b.push_str("<p>None recorded.</p>\n");
            continue;
        }
        b.push_str("<table><tr><th>When</th><th>Status</th><th>Summary</th></tr>\n");
        for e in list {
            let _ = writeln!(
                b,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                local_time(e.ts),
                esc(&e.status),
                esc(&e.summary)
            );
        }
        b.push_str("</table>\n");
    }
    page(&s.name, &b)
}

pub fn run(d: &RunDetail) -> String {
    let r = &d.run.run;
    let mut b = String::new();
    let _ = writeln!(
        b,
        "<h1>Run #{} – {}</h1>\n<table class=\"run-info\">\
         <tr><th>Status</th><td>{}</td></tr><tr><th>Started</th><td>{}</td></tr>\
         <tr><th>Finished</th><td>{}</td></tr><tr><th>Duration</th><td>{}</td></tr>\
         <tr><th>Services</th><td>{}</td></tr><tr><th>Dry run</th><td>{}</td></tr>\
         <tr><th>Summary</th><td>{}</td></tr></table>",
        r.id,
        esc(&r.workflow),
        run_status(&d.run),
        local_time(r.started_at),
        opt_time(r.finished_at),
        secs(d.run.duration_seconds),
        esc(&r.services.join(", ")),
        r.dry_run,
        esc(&r.summary)
    );
    b.push_str("<h2>Log</h2>\n<pre class=\"log\">");
    for e in &d.events {
        let _ = writeln!(
            b,
            "<span class=\"event {}\">{} {:<5} {}{}</span>",
            esc(&e.level),
            local_time(e.ts),
            esc(&e.level.to_uppercase()),
            e.service
                .as_deref()
                .map(|s| format!("[{}] ", esc(s)))
                .unwrap_or_default(),
            esc(&e.message)
        );
    }
    b.push_str("</pre>\n");
    if !d.notifications.is_empty() {
        b.push_str(
            "<h2>Notifications</h2>\n<table><tr><th>Channel</th><th>Event</th><th>Severity</th>\
             <th>Status</th><th>Error</th></tr>\n",
        );
        for n in &d.notifications {
            let x = &n.record;
            let _ = writeln!(
                b,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&x.channel),
                esc(&x.event),
                esc(&x.severity),
                esc(&x.status),
                esc(x.error.as_deref().unwrap_or(""))
            );
        }
        b.push_str("</table>\n");
    }
    page(&format!("Run #{}", r.id), &b)
}

/// A not-found or error page.
pub fn message(title: &str, text: &str) -> String {
    page(
        title,
        &format!("<h1>{}</h1>\n<p>{}</p>\n", esc(title), esc(text)),
    )
}

/// A value in a chart's unit, short.
fn value_label(unit: &str, v: f64) -> String {
    match unit {
        "bytes" => human_bytes(v.max(0.0) as u64),
        "seconds" => format!("{v:.0} s"),
        _ => format!("{v}"),
    }
}

/// A chart as inline SVG: a line through the points, a circle (with a
/// `<title>` tooltip) per point, the value range on the left and the time
/// range below. Any [`Chart`] draws the same way.
pub fn svg_chart(c: &Chart) -> String {
    const W: f64 = 480.0;
    const H: f64 = 160.0;
    const L: f64 = 64.0; // left margin for the value labels
    const B: f64 = 20.0; // bottom margin for the time labels
    const T: f64 = 18.0; // top margin for the title
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg class=\"chart\" id=\"chart-{id}\" data-chart=\"{id}\" data-points=\"{n}\" \
         xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" \
         viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{title}\">\
         <text x=\"4\" y=\"12\">{title} ({unit})</text>",
        id = esc(&c.id),
        n = c.points.len(),
        title = esc(&c.title),
        unit = esc(&c.unit),
    );
    if c.points.is_empty() {
        let _ = write!(
            s,
            "<text x=\"{L}\" y=\"{}\">no data yet</text></svg>",
            H / 2.0
        );
        return s;
    }
    let (t0, t1) = (
        c.points.first().map(|p| p.t).unwrap_or(0),
        c.points.last().map(|p| p.t).unwrap_or(0),
    );
    let vmax = c.points.iter().map(|p| p.v).fold(0.0_f64, f64::max);
    let vmin = c.points.iter().map(|p| p.v).fold(vmax, f64::min).min(0.0);
    let span_t = (t1 - t0).max(1) as f64;
    let span_v = if vmax > vmin { vmax - vmin } else { 1.0 };
    let x = |t: i64| {
        if c.points.len() == 1 {
            L + (W - L - 8.0) / 2.0
        } else {
            L + (t - t0) as f64 / span_t * (W - L - 8.0)
        }
    };
    let y = |v: f64| T + (1.0 - (v - vmin) / span_v) * (H - T - B);
    let _ = write!(
        s,
        "<line x1=\"{L}\" y1=\"{T}\" x2=\"{L}\" y2=\"{yb}\" stroke=\"#999\"/>\
         <line x1=\"{L}\" y1=\"{yb}\" x2=\"{xr}\" y2=\"{yb}\" stroke=\"#999\"/>\
         <text x=\"2\" y=\"{ytop}\">{vmax}</text><text x=\"2\" y=\"{yb}\">{vmin}</text>\
         <text x=\"{L}\" y=\"{ty}\">{tfirst}</text>\
         <text x=\"{xr}\" y=\"{ty}\" text-anchor=\"end\">{tlast}</text>",
        yb = H - B,
        xr = W - 8.0,
        ytop = T + 8.0,
        ty = H - 5.0,
        vmax = esc(&value_label(&c.unit, vmax)),
        vmin = esc(&value_label(&c.unit, vmin)),
        tfirst = esc(&local_time(t0)),
        tlast = esc(&local_time(t1)),
    );
    let coords: Vec<String> = c
        .points
        .iter()
        .map(|p| format!("{:.1},{:.1}", x(p.t), y(p.v)))
        .collect();
    let _ = write!(s, "<polyline points=\"{}\"/>", coords.join(" "));
    for p in &c.points {
        let _ = write!(
            s,
            "<circle class=\"point\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" data-t=\"{}\" \
             data-v=\"{}\"><title>{}: {}</title></circle>",
            x(p.t),
            y(p.v),
            p.t,
            p.v,
            esc(&local_time(p.t)),
            esc(&value_label(&c.unit, p.v))
        );
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::web::data::Point;

    #[test]
    fn text_is_escaped_for_elements_and_attributes() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        assert_eq!(seg("a b/<c>"), "a%20b%2F%3Cc%3E");
    }

    #[test]
    fn a_chart_has_a_circle_per_point_inside_its_box() {
        let c = Chart {
            id: "backup_size".into(),
            title: "Backup size".into(),
            unit: "bytes".into(),
            points: vec![
                Point { t: 1000, v: 10.0 },
                Point { t: 2000, v: 30.0 },
                Point { t: 4000, v: 20.0 },
            ],
        };
        let svg = svg_chart(&c);
        assert_eq!(svg.matches("<circle").count(), 3, "{svg}");
        assert!(svg.contains("data-points=\"3\""));
        // The first point is at the left edge, the largest value at the top.
        assert!(svg.contains("cx=\"64.0\""), "{svg}");
        assert!(svg.contains("cy=\"18.0\""), "{svg}");
        let empty = Chart {
            points: vec![],
            ..c
        };
        assert!(svg_chart(&empty).contains("no data yet"));
    }
}

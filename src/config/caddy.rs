//! A `caddy` service's `admin_url`: where Caddy's admin API listens. The
//! API has no authentication of its own (Caddy binds it to
//! `localhost:2019` by default), so only a loopback address or a unix
//! socket is accepted.

use std::path::PathBuf;

/// Caddy's default admin address.
pub const CADDY_ADMIN_DEFAULT: &str = "http://localhost:2019";

/// Where the admin API listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaddyAdmin {
    /// A loopback host (`localhost`, `127.0.0.0/8`, `::1`) and port.
    Tcp { host: String, port: u16 },
    /// A unix socket (`unix//run/caddy/admin.sock`, Caddy's own notation,
    /// or `unix:///run/caddy/admin.sock`).
    Unix(PathBuf),
}

/// Parse an `admin_url`.
pub fn caddy_admin(url: &str) -> Result<CaddyAdmin, String> {
    let socket = url
        .strip_prefix("unix:")
        .or_else(|| url.strip_prefix("unix//"));
    if let Some(rest) = socket.map(|r| r.trim_start_matches('/')) {
        if rest.is_empty() || rest.contains('\0') {
            return Err(format!(
                "'{url}': a unix socket needs a path (unix//run/caddy/admin.sock)"
            ));
        }
        return Ok(CaddyAdmin::Unix(PathBuf::from(format!("/{rest}"))));
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(format!(
            "'{url}': expected http://HOST:PORT on the loopback or unix//PATH (Caddy's admin API \
             over https is its remote administration, which this tool does not speak)"
        ));
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains(['/', '?', '#', '@']) {
        return Err(format!(
            "'{url}': only http://HOST:PORT (no path, query or credentials)"
        ));
    }
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (h, p) = v6
                .split_once(']')
                .ok_or_else(|| format!("'{url}': unclosed '[' in the host"))?;
            (h, p.strip_prefix(':'))
        }
        None => match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        },
    };
    let port = match port {
        None => 80,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("'{url}': invalid port '{p}'"))?,
    };
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        return Err(format!(
            "'{url}': Caddy's admin API has no authentication; use a loopback address \
             (localhost, 127.0.0.1, [::1]) or a unix socket, as Caddy's default does"
        ));
    }
    Ok(CaddyAdmin::Tcp {
        host: host.to_ascii_lowercase(),
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_sockets_only() {
        assert_eq!(
            caddy_admin("http://localhost:2019").unwrap(),
            CaddyAdmin::Tcp {
                host: "localhost".into(),
                port: 2019
            }
        );
        assert_eq!(
            caddy_admin("http://[::1]:2020/").unwrap(),
            CaddyAdmin::Tcp {
                host: "::1".into(),
                port: 2020
            }
        );
        assert!(matches!(
            caddy_admin("http://127.0.0.2:9").unwrap(),
            CaddyAdmin::Tcp { port: 9, .. }
        ));
        for u in ["unix//run/caddy/admin.sock", "unix:///run/caddy/admin.sock"] {
            assert_eq!(
                caddy_admin(u).unwrap(),
                CaddyAdmin::Unix("/run/caddy/admin.sock".into())
            );
        }
        for bad in [
            "http://10.0.0.5:2019",
            "http://caddy.lan:2019",
            "https://localhost:2019",
            "http://localhost:2019/config/",
            "http://user:pw@localhost:2019",
            "http://localhost:0",
            "http://localhost:99999",
            "unix:",
            "localhost:2019",
        ] {
            assert!(caddy_admin(bad).is_err(), "{bad} accepted");
        }
    }
}

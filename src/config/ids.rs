//! Identifier formats checked at load: our names, PVE/PBS formats (from
//! pve-common, see pve-api/NOTES.md section 11), Docker, systemd, networks.
//! Hand-written matchers: the crate has no regex dependency.

fn alnum_lower(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// Service, channel and destination names: `^[a-z0-9][a-z0-9_.-]{0,62}$`.
pub(crate) fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(alnum_lower)
        && s.len() <= 63
        && chars.all(|c| alnum_lower(c) || "_.-".contains(c))
}

/// Compose project names: `[a-z0-9][a-z0-9_-]*`.
pub(crate) fn is_compose_project(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(alnum_lower) && chars.all(|c| alnum_lower(c) || "_-".contains(c))
}

/// pve-node: `^[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?$`.
pub(crate) fn is_pve_node(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// pve-storage-id: `^[a-z][a-z0-9\-_.]*[a-z0-9]$`, case-insensitive.
pub(crate) fn is_storage_id(s: &str) -> bool {
    let s = s.to_ascii_lowercase();
    s.len() >= 2
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.ends_with(alnum_lower)
        && s.chars().all(|c| alnum_lower(c) || "-_.".contains(c))
}

/// pve-fingerprint: `([A-Fa-f0-9]{2}:){31}[A-Fa-f0-9]{2}`.
pub(crate) fn is_fingerprint(s: &str) -> bool {
    let pairs: Vec<&str> = s.split(':').collect();
    pairs.len() == 32
        && pairs
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// `user@realm`.
pub(crate) fn is_userid(s: &str) -> bool {
    match s.rsplit_once('@') {
        Some((u, realm)) => {
            !u.is_empty()
                && !realm.is_empty()
                && !s.contains('!')
                && !s.chars().any(|c| c.is_whitespace() || c == ':')
        }
        None => false,
    }
}

/// `user@realm!tokenname`, tokenname `[A-Za-z][A-Za-z0-9.\-_]+`.
pub(crate) fn is_token_id(s: &str) -> bool {
    match s.split_once('!') {
        Some((user, token)) => {
            is_userid(user)
                && token.len() >= 2
                && token.starts_with(|c: char| c.is_ascii_alphabetic())
                && token
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c))
        }
        None => false,
    }
}

/// PBS datastore: `[A-Za-z0-9_][A-Za-z0-9._\-]*`, 3..=32 characters.
pub(crate) fn is_datastore(s: &str) -> bool {
    (3..=32).contains(&s.len())
        && !s.starts_with(['.', '-'])
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

/// PBS namespace: up to 7 datastore-like components joined by `/`.
pub(crate) fn is_pbs_namespace(s: &str) -> bool {
    let parts: Vec<&str> = s.split('/').collect();
    parts.len() <= 7
        && parts.iter().all(|p| {
            !p.is_empty()
                && !p.starts_with(['.', '-'])
                && p.len() <= 31
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        })
}

/// A host name or an IP address.
pub(crate) fn is_host(s: &str) -> bool {
    if s.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_pve_node)
}

/// Docker container and volume names: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
pub(crate) fn is_docker_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// systemd unit names (with or without the `.service` suffix).
pub(crate) fn is_unit_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && !s.starts_with(['-', '.'])
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || ":-_.\\@".contains(c))
}

/// An IPv4 or IPv6 network in CIDR form.
pub(crate) fn is_cidr(s: &str) -> bool {
    match s.split_once('/') {
        Some((ip, len)) => match (ip.parse::<std::net::IpAddr>(), len.parse::<u8>()) {
            (Ok(std::net::IpAddr::V4(_)), Ok(l)) => l <= 32,
            (Ok(std::net::IpAddr::V6(_)), Ok(l)) => l <= 128,
            _ => false,
        },
        None => false,
    }
}

pub(crate) fn is_email(s: &str) -> bool {
    // Accept `Name <addr@host>` too.
    let addr = match (s.find('<'), s.rfind('>')) {
        (Some(a), Some(b)) if a < b => &s[a + 1..b],
        _ => s,
    };
    match addr.rsplit_once('@') {
        Some((local, domain)) => {
            !local.is_empty() && !domain.is_empty() && !addr.chars().any(char::is_whitespace)
        }
        None => false,
    }
}

pub(crate) fn is_header_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifier_formats() {
        type Matcher = fn(&str) -> bool;
        let cases: &[(Matcher, &str, bool)] = &[
            (is_name, "web", true),
            (is_name, "web-1.prod_x", true),
            (is_name, "Web", false),
            (is_name, "-web", false),
            (is_name, "a/b", false),
            (is_name, &"a".repeat(64), false),
            (is_compose_project, "app_1-x", true),
            (is_compose_project, "app.x", false),
            (is_pve_node, "pve1", true),
            (is_pve_node, "pve-1", true),
            (is_pve_node, "pve_1", false),
            (is_pve_node, "pve-", false),
            (is_storage_id, "local-lvm", true),
            (is_storage_id, "pbs.main", true),
            (is_storage_id, "1local", false),
            (is_storage_id, "a", false),
            (is_fingerprint, &["AB"; 32].join(":"), true),
            (is_fingerprint, &["ab"; 31].join(":"), false),
            (is_fingerprint, &["GG"; 32].join(":"), false),
            (is_token_id, "root@pam!autopilot", true),
            (is_token_id, "root@pam", false),
            (is_token_id, "root@pam!1x", false),
            (is_userid, "root@pam", true),
            (is_userid, "root", false),
            (is_datastore, "backups", true),
            (is_datastore, "ab", false),
            (is_pbs_namespace, "homelab/pve", true),
            (is_pbs_namespace, "a//b", false),
            (is_host, "192.168.1.100", true),
            (is_host, "pbs.lan", true),
            (is_host, "pbs lan", false),
            (is_docker_name, "my_app.1", true),
            (is_docker_name, "_x", false),
            (is_unit_name, "nginx.service", true),
            (is_unit_name, "getty@tty1.service", true),
            (is_unit_name, "a b", false),
            (is_cidr, "10.99.0.0/24", true),
            (is_cidr, "fd00::/64", true),
            (is_cidr, "10.99.0.0/33", false),
            (is_cidr, "10.99.0.0", false),
            (is_email, "Admin <admin@example.org>", true),
            (is_email, "admin", false),
            (is_header_name, "X-Foo", true),
            (is_header_name, "X Foo", false),
        ];
        for (i, (f, s, want)) in cases.iter().enumerate() {
            assert_eq!(f(s), *want, "case {i}: {s}");
        }
    }
}

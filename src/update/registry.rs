//! The digest a registry serves for a tag, read without pulling (the
//! check-only `run update --dry-run`): `HEAD /v2/<name>/manifests/<tag>`
//! of the Registry HTTP API, anonymous, with the bearer-token exchange
//! registries such as Docker Hub ask for. Plain HTTP only for a registry
//! on the loopback (as the Docker engine allows), HTTPS (rustls) otherwise.

use crate::docker::image::{repository, tag};
use crate::error::{Error, Result};
use std::time::Duration;

const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json";

/// `(base URL, repository path)` of a reference, as the engine reads it.
pub fn locate(reference: &str) -> (String, String) {
    let repo = repository(reference);
    let (host, path) = match repo.split_once('/') {
        Some((h, p)) if h.contains('.') || h.contains(':') || h == "localhost" => {
            (h.to_string(), p.to_string())
        }
        _ => ("registry-1.docker.io".to_string(), repo.to_string()),
    };
    let path = if host == "registry-1.docker.io" && !path.contains('/') {
        format!("library/{path}")
    } else {
        path
    };
    let bare = host.rsplit_once(':').map(|(h, _)| h).unwrap_or(&host);
    let loopback = bare == "localhost"
        || bare.starts_with("127.")
        || bare == "[::1]"
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    let scheme = if loopback { "http" } else { "https" };
    (format!("{scheme}://{host}"), path)
}

/// The `Bearer realm=...,service=...,scope=...` challenge's parameters.
fn challenge(h: &str) -> Option<(String, Vec<(String, String)>)> {
    let rest = h.strip_prefix("Bearer ")?;
    let mut realm = None;
    let mut params = Vec::new();
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=')?;
        let v = v.trim_matches('"').to_string();
        if k == "realm" {
            realm = Some(v);
        } else {
            params.push((k.to_string(), v));
        }
    }
    Some((realm?, params))
}

/// The digest the registry serves for `reference`'s tag now.
pub fn remote_digest(reference: &str) -> Result<String> {
    let (base, path) = locate(reference);
    let url = format!("{base}/v2/{path}/manifests/{}", tag(reference));
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| Error::Other(format!("registry client: {e}")))?;
    let unreachable = |e: reqwest::Error| Error::Unreachable(format!("registry {base}: {e}"));
    let mut resp = client
        .head(&url)
        .header("Accept", ACCEPT)
        .send()
        .map_err(unreachable)?;
    if resp.status() == reqwest::StatusCode::UNAUTHORIZED {
        let auth = resp
            .headers()
            .get("www-authenticate")
            .and_then(|h| h.to_str().ok())
            .and_then(challenge)
            .ok_or_else(|| {
                Error::Unreachable(format!("registry {base}: needs credentials for {path}"))
            })?;
        let token: serde_json::Value = client
            .get(&auth.0)
            .query(&auth.1)
            .send()
            .and_then(|r| r.error_for_status())
            .and_then(|r| r.json())
            .map_err(unreachable)?;
        let t = token["token"]
            .as_str()
            .or_else(|| token["access_token"].as_str())
            .unwrap_or("")
            .to_string();
        resp = client
            .head(&url)
            .header("Accept", ACCEPT)
            .bearer_auth(t)
            .send()
            .map_err(unreachable)?;
    }
    if !resp.status().is_success() {
        return Err(Error::Unreachable(format!(
            "registry {base}: {path}:{} answered HTTP {}",
            tag(reference),
            resp.status().as_u16()
        )));
    }
    resp.headers()
        .get("docker-content-digest")
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .ok_or_else(|| {
            Error::Unreachable(format!(
                "registry {base}: no Docker-Content-Digest for {path}"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_map_to_their_registry() {
        assert_eq!(
            locate("nginx:1.27"),
            (
                "https://registry-1.docker.io".into(),
                "library/nginx".into()
            )
        );
        assert_eq!(
            locate("127.0.0.1:5000/a/b:v1"),
            ("http://127.0.0.1:5000".into(), "a/b".into())
        );
        assert_eq!(
            locate("ghcr.io/o/app"),
            ("https://ghcr.io".into(), "o/app".into())
        );
        assert_eq!(
            locate("localhost:5000/app"),
            ("http://localhost:5000".into(), "app".into())
        );
    }

    #[test]
    fn a_bearer_challenge_is_read() {
        let (realm, p) = challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull""#,
        )
        .unwrap();
        assert_eq!(realm, "https://auth.docker.io/token");
        assert_eq!(p.len(), 2);
    }
}

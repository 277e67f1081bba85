//! Images for updates: pull a reference, read an image's ID and registry
//! digests, tag an image (the rollback of a Compose project points its
//! tags at the images that ran before), remove an image nobody uses.
//!
//! Pulls go through the `docker` CLI (argv, never a shell), which knows
//! the admin's registry credentials (`docker login`); the rest through the
//! engine's socket when there is one, else the CLI.

use super::engine::{blocking_for as blocking, cli, get, request, socket};
use crate::error::{Error, Result};
use serde::Serialize;
use std::time::Duration;

/// How long one pull may take.
pub const PULL_TIMEOUT: Duration = Duration::from_secs(1800);

/// An image reference (`repo[:tag][@digest]`, with a registry host):
/// only the characters a reference may have, and never an option.
pub fn valid_reference(r: &str) -> bool {
    !r.is_empty()
        && r.len() <= 512
        && !r.starts_with('-')
        && r.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-/:@".contains(&b))
}

fn check_reference(r: &str) -> Result<()> {
    if valid_reference(r) {
        Ok(())
    } else {
        Err(Error::Usage(format!("invalid image reference {r:?}")))
    }
}

/// The repository of a reference: without its `@digest` and `:tag` (a
/// `:` before the last `/` is a registry port).
pub fn repository(r: &str) -> &str {
    let r = r.split('@').next().unwrap_or(r);
    match (r.rfind(':'), r.rfind('/')) {
        (Some(c), Some(s)) if c > s => &r[..c],
        (Some(c), None) => &r[..c],
        _ => r,
    }
}

/// The tag of a reference (`latest` when it names none).
pub fn tag(r: &str) -> &str {
    let repo = repository(r);
    let rest = &r.split('@').next().unwrap_or(r)[repo.len()..];
    rest.strip_prefix(':').unwrap_or("latest")
}

/// What the engine knows of an image.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ImageInfo {
    /// `sha256:...`: the image's ID (a locally built image has only this).
    pub id: String,
    /// `repo@sha256:...` for each registry it was pulled from or pushed to.
    pub repo_digests: Vec<String>,
    pub repo_tags: Vec<String>,
}

impl ImageInfo {
    /// The registry digest of this image under `reference`'s repository.
    pub fn digest_for(&self, reference: &str) -> Option<String> {
        let repo = repository(reference);
        self.repo_digests
            .iter()
            .find(|d| d.split('@').next() == Some(repo))
            .and_then(|d| d.split('@').nth(1))
            .map(str::to_string)
    }
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

/// `docker image inspect REF` (a reference or an ID): None when the engine
/// has no such image.
pub fn inspect(reference: &str) -> Result<Option<ImageInfo>> {
    check_reference(reference)?;
    let what = format!("inspect image {reference}");
    let v = blocking(&what, Duration::from_secs(60), async {
        match socket() {
            Some(sock) => get(&sock, &format!("/images/{reference}/json")).await,
            None => match cli(&what, &["image", "inspect", "--", reference]).await {
                Ok(out) => {
                    let v: serde_json::Value =
                        serde_json::from_slice(&out).map_err(|e| format!("{what}: {e}"))?;
                    Ok(v.as_array().and_then(|a| a.first()).cloned())
                }
                Err(e) if e.to_lowercase().contains("no such") => Ok(None),
                Err(e) => Err(e),
            },
        }
    })?;
    Ok(v.map(|v| ImageInfo {
        id: v["Id"].as_str().unwrap_or("").to_string(),
        repo_digests: strings(&v["RepoDigests"]),
        repo_tags: strings(&v["RepoTags"]),
    }))
}

/// `docker pull -- REF`: the image the reference names afterwards. A failed
/// pull (registry down, no such tag, no credentials) changes nothing.
pub fn pull(reference: &str) -> Result<ImageInfo> {
    check_reference(reference)?;
    let argv: Vec<String> = ["docker", "pull", "--quiet", "--", reference]
        .map(String::from)
        .to_vec();
    let out = crate::proc::run(
        &argv,
        &crate::proc::RunOptions {
            timeout_seconds: PULL_TIMEOUT.as_secs(),
            max_output: 64 * 1024,
            ..Default::default()
        },
    )?;
    if out.timed_out {
        return Err(Error::Timeout {
            what: format!("docker pull {reference}"),
            after: PULL_TIMEOUT,
        });
    }
    if out.code != 0 {
        return Err(Error::Command {
            program: "docker".into(),
            message: format!(
                "docker pull {reference}: exit {}: {}",
                out.code,
                out.stderr.trim()
            ),
        });
    }
    inspect(reference)?.ok_or_else(|| Error::Command {
        program: "docker".into(),
        message: format!("docker pull {reference}: the image is not there afterwards"),
    })
}

/// Point `reference` at the image `id` (`docker tag ID REF`).
pub fn tag_image(id: &str, reference: &str) -> Result<()> {
    check_reference(id)?;
    check_reference(reference)?;
    let repo = repository(reference).to_string();
    let t = tag(reference).to_string();
    let what = format!("tag {id} as {reference}");
    blocking(&what, Duration::from_secs(60), async {
        match socket() {
            Some(sock) => {
                let q = url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("repo", &repo)
                    .append_pair("tag", &t)
                    .finish();
                let (status, body) =
                    request(&sock, "POST", &format!("/images/{id}/tag?{q}"), None).await?;
                match status {
                    200..=299 => Ok(()),
                    s => Err(format!(
                        "HTTP {s}: {}",
                        String::from_utf8_lossy(&body).trim()
                    )),
                }
            }
            None => cli(&what, &["tag", id, reference]).await.map(drop),
        }
    })
}

/// Remove an image by ID when no tag names it any more and no container
/// uses it (the engine refuses then; that is not an error here). Whether
/// it went.
pub fn remove_unused(id: &str) -> Result<bool> {
    check_reference(id)?;
    // An image someone still tags is theirs to remove.
    match inspect(id)? {
        None => return Ok(false),
        Some(i) if !i.repo_tags.is_empty() => return Ok(false),
        Some(_) => {}
    }
    let what = format!("remove image {id}");
    blocking(&what, Duration::from_secs(120), async {
        match socket() {
            Some(sock) => {
                let (status, body) =
                    request(&sock, "DELETE", &format!("/images/{id}"), None).await?;
                match status {
                    200..=299 => Ok(true),
                    404 | 409 => Ok(false),
                    s => Err(format!(
                        "HTTP {s}: {}",
                        String::from_utf8_lossy(&body).trim()
                    )),
                }
            }
            None => match cli(&what, &["image", "rm", "--", id]).await {
                Ok(_) => Ok(true),
                Err(e) if e.contains("conflict") || e.to_lowercase().contains("no such") => {
                    Ok(false)
                }
                Err(e) => Err(e),
            },
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_into_repository_and_tag() {
        assert_eq!(repository("nginx"), "nginx");
        assert_eq!(tag("nginx"), "latest");
        assert_eq!(repository("127.0.0.1:5000/a/b:v1"), "127.0.0.1:5000/a/b");
        assert_eq!(tag("127.0.0.1:5000/a/b:v1"), "v1");
        assert_eq!(repository("127.0.0.1:5000/a/b"), "127.0.0.1:5000/a/b");
        assert_eq!(tag("127.0.0.1:5000/a/b"), "latest");
        assert_eq!(repository("a/b@sha256:00"), "a/b");
        assert!(valid_reference("127.0.0.1:5000/a/b:v1"));
        for bad in ["", "-x", "a b", "a;b", "a$(x)"] {
            assert!(!valid_reference(bad), "{bad}");
        }
    }

    #[test]
    fn the_digest_is_the_one_of_the_reference_s_repository() {
        let i = ImageInfo {
            id: "sha256:1".into(),
            repo_digests: vec!["other/x@sha256:aa".into(), "h:5000/a/b@sha256:bb".into()],
            repo_tags: vec![],
        };
        assert_eq!(
            i.digest_for("h:5000/a/b:latest").as_deref(),
            Some("sha256:bb")
        );
        assert_eq!(i.digest_for("a/c"), None);
    }
}

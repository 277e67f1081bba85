//! Recreate a container on another image with the same configuration
//! (name, environment, mounts, ports, networks, restart policy, labels,
//! command), keeping the old container, stopped and renamed, until the
//! update is proven or rolled back.
//!
//! What the old image set by itself (its `ENV`, `CMD`, `ENTRYPOINT`,
//! labels, ...) is left to the new image, so an image that changes its
//! command or environment gets its own; what the admin set is carried over.
//! Through the engine's socket only.

use super::engine::{inspect_container, request, socket};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// The name the old container has while the new one runs.
pub fn parked_name(name: &str) -> String {
    format!("{name}-hla-previous")
}

/// What [`recreate`] did: enough to undo it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recreated {
    pub container: String,
    pub old_id: String,
    pub new_id: String,
    pub image: String,
}

fn call(method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Value)> {
    let sock = socket().ok_or_else(|| {
        Error::Unreachable(
            "recreating a container needs the Docker engine's socket (DOCKER_HOST=unix://...)"
                .into(),
        )
    })?;
    let what = format!("{method} {path}");
    let r = crate::notify::block_on(async {
        tokio::time::timeout(
            std::time::Duration::from_secs(120),
            request(&sock, method, path, body),
        )
        .await
    });
    match r {
        Err(_) => Err(Error::Timeout {
            what,
            after: std::time::Duration::from_secs(120),
        }),
        Ok(Err(e)) => Err(Error::Unreachable(format!("{what}: {e}"))),
        Ok(Ok((status, b))) => Ok((status, serde_json::from_slice(&b).unwrap_or(Value::Null))),
    }
}

fn expect(what: &str, (status, body): (u16, Value), ok: &[u16]) -> Result<Value> {
    if (200..300).contains(&status) || ok.contains(&status) {
        Ok(body)
    } else {
        Err(Error::Command {
            program: "docker".into(),
            message: format!(
                "{what}: HTTP {status}: {}",
                body["message"].as_str().unwrap_or("")
            ),
        })
    }
}

/// The container's `Config` less what its image set (so the new image's
/// own values apply), with `Image` set to `image`.
fn create_config(old: &Value, old_image: &Value, image: &str) -> Value {
    let mut cfg = old["Config"].as_object().cloned().unwrap_or_default();
    let img = &old_image["Config"];
    // Lists and maps the image contributed: keep only the container's own.
    if let (Some(env), Some(ienv)) = (
        cfg.get("Env").and_then(Value::as_array),
        img["Env"].as_array(),
    ) {
        let own: Vec<Value> = env.iter().filter(|e| !ienv.contains(e)).cloned().collect();
        cfg.insert("Env".into(), Value::Array(own));
    }
    for key in ["Labels", "ExposedPorts", "Volumes"] {
        if let (Some(m), Some(im)) = (
            cfg.get(key).and_then(Value::as_object),
            img[key].as_object(),
        ) {
            let own: Map<String, Value> = m
                .iter()
                .filter(|(k, v)| im.get(*k) != Some(v))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            cfg.insert(key.into(), Value::Object(own));
        }
    }
    for key in [
        "Cmd",
        "Entrypoint",
        "WorkingDir",
        "User",
        "Healthcheck",
        "StopSignal",
    ] {
        if cfg.get(key) == img.get(key) {
            cfg.remove(key);
        }
    }
    // The old container's ID as its hostname is the engine's default, not a setting.
    let id = old["Id"].as_str().unwrap_or("");
    if cfg
        .get("Hostname")
        .and_then(Value::as_str)
        .is_some_and(|h| !h.is_empty() && id.starts_with(h))
    {
        cfg.remove("Hostname");
    }
    cfg.insert("Image".into(), json!(image));
    cfg.insert("HostConfig".into(), old["HostConfig"].clone());
    // The network of NetworkMode at create; the others are connected after.
    let mode = old["HostConfig"]["NetworkMode"].as_str().unwrap_or("");
    let nets = old["NetworkSettings"]["Networks"].as_object();
    if let Some(ep) = nets.and_then(|n| n.get(mode)) {
        cfg.insert(
            "NetworkingConfig".into(),
            json!({ "EndpointsConfig": { mode: endpoint(ep) } }),
        );
    }
    Value::Object(cfg)
}

/// What of an endpoint is configuration (not what the engine assigned).
fn endpoint(ep: &Value) -> Value {
    json!({
        "IPAMConfig": ep["IPAMConfig"],
        "Links": ep["Links"],
        "Aliases": ep["Aliases"],
    })
}

fn path_q(base: &str, k: &str, v: &str) -> String {
    let q = url::form_urlencoded::Serializer::new(String::new())
        .append_pair(k, v)
        .finish();
    format!("{base}?{q}")
}

/// Recreate `name` on `image`: the old container is stopped and renamed
/// ([`parked_name`]), the new one created with its configuration and
/// started. When that fails, the new one is removed and the old one put
/// back and started before the error is returned.
pub fn recreate(name: &str, image: &str) -> Result<Recreated> {
    if !super::engine::valid_name(name) {
        return Err(Error::Usage(format!("invalid container name {name:?}")));
    }
    let old = inspect_container(name)?.ok_or_else(|| Error::Command {
        program: "docker".into(),
        message: format!("no such container: {name}"),
    })?;
    let old_id = old["Id"].as_str().unwrap_or("").to_string();
    let old_image_id = old["Image"].as_str().unwrap_or("").to_string();
    let old_image = expect(
        "inspect image",
        call("GET", &format!("/images/{old_image_id}/json"), None)?,
        &[],
    )
    .unwrap_or(Value::Null);
    let body = create_config(&old, &old_image, image);
    let parked = parked_name(name);
    expect(
        "rename the old container",
        call(
            "POST",
            &path_q(&format!("/containers/{old_id}/rename"), "name", &parked),
            None,
        )?,
        &[],
    )?;
    let made = (|| -> Result<String> {
        expect(
            "stop the old container",
            call("POST", &format!("/containers/{old_id}/stop"), None)?,
            &[304],
        )?;
        let created = expect(
            "create the new container",
            call(
                "POST",
                &path_q("/containers/create", "name", name),
                Some(&body),
            )?,
            &[],
        )?;
        let new_id = created["Id"].as_str().unwrap_or("").to_string();
        let mode = old["HostConfig"]["NetworkMode"].as_str().unwrap_or("");
        for (net, ep) in old["NetworkSettings"]["Networks"]
            .as_object()
            .into_iter()
            .flatten()
        {
            if net != mode {
                expect(
                    &format!("connect network {net}"),
                    call(
                        "POST",
                        &format!("/networks/{net}/connect"),
                        Some(&json!({ "Container": new_id, "EndpointConfig": endpoint(ep) })),
                    )?,
                    &[],
                )?;
            }
        }
        expect(
            "start the new container",
            call("POST", &format!("/containers/{new_id}/start"), None)?,
            &[304],
        )?;
        Ok(new_id)
    })();
    match made {
        Ok(new_id) => Ok(Recreated {
            container: name.to_string(),
            old_id,
            new_id,
            image: image.to_string(),
        }),
        Err(e) => {
            if let Err(undo) = restore(name, &old_id) {
                tracing::error!("{name}: could not put the old container back: {undo}");
            }
            Err(e)
        }
    }
}

/// Put the container `old_id` back as `name`: whatever else has that name
/// now is removed, the old one renamed back and started. Safe to repeat
/// (the next run does it again after a crash).
pub fn restore(name: &str, old_id: &str) -> Result<()> {
    if let Some(cur) = inspect_container(name)? {
        if cur["Id"].as_str() != Some(old_id) {
            let id = cur["Id"].as_str().unwrap_or("").to_string();
            expect(
                "remove the new container",
                call("DELETE", &format!("/containers/{id}?force=1"), None)?,
                &[404],
            )?;
        }
    }
    let Some(old) = inspect_container(old_id)? else {
        return Err(Error::Command {
            program: "docker".into(),
            message: format!("the previous container {old_id} of {name} is gone"),
        });
    };
    if old["Name"].as_str().map(|n| n.trim_start_matches('/')) != Some(name) {
        expect(
            "rename the old container back",
            call(
                "POST",
                &path_q(&format!("/containers/{old_id}/rename"), "name", name),
                None,
            )?,
            &[],
        )?;
    }
    expect(
        "start the old container",
        call("POST", &format!("/containers/{old_id}/start"), None)?,
        &[304],
    )?;
    Ok(())
}

/// Remove the parked old container once the new one is proven.
pub fn remove_old(old_id: &str) -> Result<()> {
    expect(
        "remove the old container",
        call("DELETE", &format!("/containers/{old_id}?force=1"), None)?,
        &[404],
    )
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_image_set_is_left_to_the_new_image() {
        let old = json!({
            "Id": "abcdef0123456789",
            "Config": {
                "Hostname": "abcdef012345",
                "Env": ["PATH=/bin", "MINE=1"],
                "Cmd": ["serve", "v1"],
                "Labels": {"from.image": "x", "mine": "y"},
                "Image": "repo:latest",
                "User": "app",
            },
            "HostConfig": {"NetworkMode": "none", "RestartPolicy": {"Name": "always"}},
            "NetworkSettings": {"Networks": {"none": {"IPAddress": "", "Aliases": null}}},
        });
        let img = json!({"Config": {"Env": ["PATH=/bin"], "Cmd": ["serve", "v1"],
                                    "Labels": {"from.image": "x"}}});
        let c = create_config(&old, &img, "repo@sha256:00");
        assert_eq!(c["Env"], json!(["MINE=1"]));
        assert!(
            c.get("Cmd").is_none(),
            "the image's command is the new image's"
        );
        assert_eq!(c["Labels"], json!({"mine": "y"}));
        assert_eq!(c["User"], json!("app"));
        assert!(c.get("Hostname").is_none());
        assert_eq!(c["Image"], json!("repo@sha256:00"));
        assert_eq!(c["HostConfig"]["RestartPolicy"]["Name"], json!("always"));
        assert!(c["NetworkingConfig"]["EndpointsConfig"]["none"].is_object());
    }
}

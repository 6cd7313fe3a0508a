//! Where containerd would pull a registry's content from: the `hosts.toml` files of its
//! registry host configuration (`config_path`, by default `/etc/containerd/certs.d`), read the
//! way containerd reads them, so a check that fetches from the registry goes where the pull
//! went.
//!
//! For registry `HOST`, `DIR/HOST/hosts.toml` (else `DIR/_default/hosts.toml`) in the first
//! directory that has one gives, in file order, the `[host."scheme://name"]` mirrors whose
//! `capabilities` include `pull` (all of them when unset), then `server` (default
//! `https://HOST`). Without any file the registry itself is the only endpoint. Mirrors with a
//! path (`override_path`) cannot be spoken to by this client and are skipped with a note.

use std::path::{Path, PathBuf};

/// The default registry host configuration directories, as containerd's.
pub const DEFAULT_HOSTS_DIRS: [&str; 2] = ["/etc/containerd/certs.d", "/etc/docker/certs.d"];

/// One place to fetch a registry's content from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `name[:port]`, as a reference's registry part.
    pub host: String,
    /// Whether it is spoken to over plain HTTP (`http://`).
    pub plain_http: bool,
}

/// Why a `hosts.toml` was refused.
#[derive(Debug, thiserror::Error)]
#[error("registry host configuration {path}: {message}")]
pub struct HostsError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub message: String,
}

/// The endpoints for `registry`, mirrors first, and notes on entries that were skipped.
pub fn endpoints(
    dirs: &[PathBuf],
    registry: &str,
) -> Result<(Vec<Endpoint>, Vec<String>), HostsError> {
    // containerd names directories by host, with `docker.io` for Docker Hub.
    let file = dirs.iter().find_map(|dir| {
        [registry, "_default"]
            .iter()
            .map(|name| dir.join(name).join("hosts.toml"))
            .find(|f| f.is_file())
    });
    match file {
        Some(file) => parse(&file, registry),
        None => Ok((vec![default_endpoint(registry)], Vec::new())),
    }
}

fn default_endpoint(registry: &str) -> Endpoint {
    Endpoint {
        host: registry.to_owned(),
        plain_http: false,
    }
}

fn parse(path: &Path, registry: &str) -> Result<(Vec<Endpoint>, Vec<String>), HostsError> {
    let error = |message: String| HostsError {
        path: path.to_owned(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
    let document: toml_edit::DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| error(e.message().to_owned()))?;
    let mut found = Vec::new();
    let mut notes = Vec::new();
    if let Some(hosts) = document.get("host").and_then(|h| h.as_table_like()) {
        for (url, entry) in hosts.iter() {
            let pulls = entry
                .get("capabilities")
                .and_then(|c| c.as_array())
                .is_none_or(|caps| caps.iter().any(|c| c.as_str() == Some("pull")));
            if !pulls {
                continue;
            }
            match endpoint_of(url) {
                Ok(endpoint) => found.push(endpoint),
                Err(why) => notes.push(format!("{}: skipping host {url:?}: {why}", path.display())),
            }
        }
    }
    match document.get("server").and_then(|s| s.as_str()) {
        Some(server) => match endpoint_of(server) {
            Ok(endpoint) => found.push(endpoint),
            Err(why) => notes.push(format!(
                "{}: skipping server {server:?}: {why}",
                path.display()
            )),
        },
        None if registry != "_default" => found.push(default_endpoint(registry)),
        None => {}
    }
    if found.is_empty() {
        return Err(error(format!("it names no usable endpoint for {registry}")));
    }
    Ok((found, notes))
}

/// `scheme://name[:port][/v2]` as an endpoint.
fn endpoint_of(url: &str) -> Result<Endpoint, &'static str> {
    let (plain_http, rest) = if let Some(rest) = url.strip_prefix("http://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("https://") {
        (false, rest)
    } else {
        (false, url)
    };
    let rest = rest.trim_end_matches('/');
    let rest = rest.strip_suffix("/v2").unwrap_or(rest);
    if rest.is_empty() {
        return Err("no host");
    }
    if rest.contains('/') {
        return Err("a path other than /v2 is not supported");
    }
    Ok(Endpoint {
        host: rest.to_owned(),
        plain_http,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_come_first_in_file_order_then_the_server() -> Result<(), Box<dyn std::error::Error>>
    {
        let dir = tempfile::tempdir()?;
        let host_dir = dir.path().join("reg.example:5000");
        std::fs::create_dir_all(&host_dir)?;
        std::fs::write(
            host_dir.join("hosts.toml"),
            r#"server = "https://reg.example:5000"
[host."http://127.0.0.1:5111"]
  capabilities = ["pull", "resolve"]
[host."https://push-only.example"]
  capabilities = ["push"]
[host."https://a.example/v2"]
[host."https://b.example/some/path"]
"#,
        )?;
        let (found, notes) = endpoints(&[dir.path().to_owned()], "reg.example:5000")?;
        let hosts: Vec<(&str, bool)> = found
            .iter()
            .map(|e| (e.host.as_str(), e.plain_http))
            .collect();
        assert_eq!(
            hosts,
            [
                ("127.0.0.1:5111", true),
                ("a.example", false),
                ("reg.example:5000", false)
            ]
        );
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("b.example"), "{notes:?}");

        let (other, _) = endpoints(&[dir.path().to_owned()], "other.example")?;
        assert_eq!(other, [default_endpoint("other.example")]);

        std::fs::write(host_dir.join("hosts.toml"), "server = [")?;
        let bad = endpoints(&[dir.path().to_owned()], "reg.example:5000")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(bad.contains("hosts.toml"), "{bad}");
        Ok(())
    }
}

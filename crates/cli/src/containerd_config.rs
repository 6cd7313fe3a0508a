//! `wasmcell containerd-config`: the runtime entry a node's containerd needs for Kubernetes
//! RuntimeClasses with handler `wasmcell`, printed or patched into the config in place.
//!
//! The CRI plugin's runtime table moved between config versions: version 2 (containerd 1.6
//! and 1.7) uses `plugins."io.containerd.grpc.v1.cri".containerd.runtimes.NAME`, version 3
//! (containerd 2.x) `plugins."io.containerd.cri.v1.runtime".containerd.runtimes.NAME`.
//! Patching edits only those tables (toml_edit keeps every other byte, comments included),
//! writes a backup first, and changes nothing when the entry is already there.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use clap::Args;
use toml_edit::{DocumentMut, Item, Table, value};

/// Arguments of `wasmcell containerd-config`.
#[derive(Debug, Args)]
pub struct ContainerdConfigArgs {
    /// containerd's config file.
    #[arg(long, default_value = "/etc/containerd/config.toml")]
    config: PathBuf,
    /// Config version to write for (2: containerd 1.6/1.7, 3: containerd 2.x) [default: the
    /// file's `version`, else the major version of `containerd --version`].
    #[arg(long = "config-version", value_name = "2|3")]
    config_version: Option<i64>,
    /// The runtime handler name (what a RuntimeClass's `handler` says).
    #[arg(long, default_value = "wasmcell")]
    handler: String,
    /// A wasmcell policy file for this handler (the runtime's `ConfigPath` option).
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Patch the config file in place (after writing FILE.wasmcell-backup) instead of printing
    /// the entry.
    #[arg(long)]
    write: bool,
    /// After a change, restart containerd with `systemctl restart containerd`.
    #[arg(long, requires = "write")]
    restart: bool,
}

const RUNTIME_TYPE: &str = "io.containerd.wasmcell.v1";

/// Runs `wasmcell containerd-config`.
pub fn run(args: &ContainerdConfigArgs) -> anyhow::Result<()> {
    let existing = match std::fs::read_to_string(&args.config) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !args.write => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", args.config.display())),
    };
    let mut document: DocumentMut = existing
        .as_deref()
        .unwrap_or_default()
        .parse()
        .with_context(|| format!("{} is not valid TOML", args.config.display()))?;
    let version = match args.config_version {
        Some(v) => v,
        None => match document.get("version").and_then(Item::as_integer) {
            Some(v) => v,
            // Plugin tables without `version` are the old version 1 format.
            None if document.contains_key("plugins") => bail!(
                "{} has plugin settings but no `version` key (the version 1 format); migrate it \
                 with `containerd config migrate` or give --config-version",
                args.config.display()
            ),
            None => version_of_installed_containerd()?,
        },
    };
    let policy = args
        .policy
        .as_ref()
        .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()));
    if !args.write {
        let mut entry = DocumentMut::new();
        entry["version"] = value(version);
        add_runtime(&mut entry, version, &args.handler, policy.as_deref())?;
        print!("{entry}");
        return Ok(());
    }
    let Some(before) = existing else {
        bail!("{} does not exist", args.config.display());
    };
    if document.get("version").is_none() {
        document["version"] = value(version);
    }
    add_runtime(&mut document, version, &args.handler, policy.as_deref())?;
    let after = document.to_string();
    if after == before {
        println!(
            "{}: runtime {} is already configured; nothing changed",
            args.config.display(),
            args.handler
        );
        return Ok(());
    }
    let backup = backup_path(&args.config);
    std::fs::write(&backup, &before)
        .with_context(|| format!("writing the backup {}", backup.display()))?;
    wasmcell_oci::write::write_atomically(&args.config, after.as_bytes())
        .with_context(|| format!("writing {}", args.config.display()))?;
    println!(
        "{}: added runtime {} ({RUNTIME_TYPE}); previous file saved as {}",
        args.config.display(),
        args.handler,
        backup.display()
    );
    if args.restart {
        let status = Command::new("systemctl")
            .args(["restart", "containerd"])
            .status()
            .context("running systemctl restart containerd")?;
        if !status.success() {
            bail!("systemctl restart containerd failed ({status})");
        }
        println!("containerd restarted");
    } else {
        println!("restart containerd for the change to take effect");
    }
    Ok(())
}

fn backup_path(config: &Path) -> PathBuf {
    let mut name = config.file_name().unwrap_or_default().to_owned();
    name.push(".wasmcell-backup");
    config.with_file_name(name)
}

/// `version = 3` for containerd 2.x, 2 for 1.x, from `containerd --version`.
fn version_of_installed_containerd() -> anyhow::Result<i64> {
    let out = Command::new("containerd")
        .arg("--version")
        .output()
        .context("no config file and no containerd to ask: give --config-version 2 or 3")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let major = text
        .split_whitespace()
        .nth(2)
        .and_then(|v| v.trim_start_matches('v').split('.').next())
        .and_then(|m| m.parse::<u32>().ok())
        .with_context(|| format!("cannot read a version from {text:?}"))?;
    Ok(if major >= 2 { 3 } else { 2 })
}

/// The table path of the CRI runtimes for `version`.
fn runtimes_path(version: i64) -> anyhow::Result<[&'static str; 4]> {
    Ok(match version {
        2 => [
            "plugins",
            "io.containerd.grpc.v1.cri",
            "containerd",
            "runtimes",
        ],
        3 => [
            "plugins",
            "io.containerd.cri.v1.runtime",
            "containerd",
            "runtimes",
        ],
        other => {
            bail!("config version {other} is not supported (2 for containerd 1.6/1.7, 3 for 2.x)")
        }
    })
}

/// Adds (or updates) the handler's runtime entry under the CRI runtimes table.
fn add_runtime(
    document: &mut DocumentMut,
    version: i64,
    handler: &str,
    policy: Option<&Path>,
) -> anyhow::Result<()> {
    let path = runtimes_path(version)?;
    let mut table = document.as_table_mut();
    for key in path {
        let item = table
            .entry(key)
            .or_insert_with(|| Item::Table(implicit_table()));
        table = item
            .as_table_mut()
            .with_context(|| format!("{key} in the config is not a table"))?;
    }
    // Version 2 (containerd 1.7) forgets its built-in runc entry as soon as any runtime is
    // configured, which would break every runc pod; keep it explicit.
    if version == 2 && !table.contains_key("runc") {
        let mut runc = Table::new();
        runc["runtime_type"] = value("io.containerd.runc.v2");
        table.insert("runc", Item::Table(runc));
    }
    let entry = table
        .entry(handler)
        .or_insert_with(|| Item::Table(Table::new()))
        .as_table_mut()
        .with_context(|| format!("runtime {handler} in the config is not a table"))?;
    entry["runtime_type"] = value(RUNTIME_TYPE);
    if let Some(policy) = policy {
        let options = entry
            .entry("options")
            .or_insert_with(|| Item::Table(Table::new()))
            .as_table_mut()
            .context("the runtime's options are not a table")?;
        options["ConfigPath"] = value(policy.display().to_string());
    }
    Ok(())
}

fn implicit_table() -> Table {
    let mut table = Table::new();
    table.set_implicit(true);
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_1_is_refused() {
        let mut doc = DocumentMut::new();
        assert!(add_runtime(&mut doc, 1, "wasmcell", None).is_err());
    }

    #[test]
    fn entries_land_in_the_right_table_and_keep_the_rest() -> anyhow::Result<()> {
        let text = "# node config\nversion = 2\n\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = \"pause:3.9\" # pinned\n";
        let mut doc: DocumentMut = text.parse()?;
        add_runtime(
            &mut doc,
            2,
            "wasmcell",
            Some(Path::new("/etc/wasmcell/strict.toml")),
        )?;
        let out = doc.to_string();
        assert!(out.starts_with("# node config\nversion = 2\n"), "{out}");
        assert!(
            out.contains("sandbox_image = \"pause:3.9\" # pinned"),
            "{out}"
        );
        let parsed: DocumentMut = out.parse()?;
        let runtimes = &parsed["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"];
        assert_eq!(
            runtimes["wasmcell"]["runtime_type"].as_str(),
            Some(RUNTIME_TYPE)
        );
        assert_eq!(
            runtimes["runc"]["runtime_type"].as_str(),
            Some("io.containerd.runc.v2")
        );
        assert_eq!(
            runtimes["wasmcell"]["options"]["ConfigPath"].as_str(),
            Some("/etc/wasmcell/strict.toml")
        );
        let mut again: DocumentMut = out.parse()?;
        add_runtime(
            &mut again,
            2,
            "wasmcell",
            Some(Path::new("/etc/wasmcell/strict.toml")),
        )?;
        assert_eq!(again.to_string(), out, "not idempotent");

        let mut v3 = DocumentMut::new();
        add_runtime(&mut v3, 3, "wasmcell", None)?;
        let v3 = v3.to_string();
        assert!(
            v3.contains("[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.wasmcell]"),
            "{v3}"
        );
        assert!(!v3.contains("runc"), "{v3}");
        Ok(())
    }
}

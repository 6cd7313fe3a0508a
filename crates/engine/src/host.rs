//! What this host offers guests, and the name-level checks against it.
//!
//! - [`WASI_P2_INTERFACES`] at [`WASI_P2_VERSION`] are exactly what the component linker in
//!   `run.rs` defines (wasmtime-wasi's `p2::add_to_linker_sync`); a test probes every entry
//!   against that linker so the table cannot drift from it. Preview 1 functions come from the
//!   module linker itself ([`WasmEngine::preview1_functions`](crate::WasmEngine)).
//! - [`check_component_names`] checks import names (as found in a wasm config or a binary)
//!   with the linker's semver rule and an operator's [`Policy`], and reports *every* problem,
//!   which wasmtime's type-check (first error only) cannot. It needs no engine and no binary,
//!   so the shim runs it on an artifact's config before the wasm layer is read.

use std::fmt;

/// The WASI 0.2 release the host implements (the wit of the pinned wasmtime-wasi).
pub const WASI_P2_VERSION: &str = "0.2.12";

/// The world components run in.
pub const COMMAND_WORLD: &str = "wasi:cli/command";

/// The module name every preview 1 function is imported from.
pub const PREVIEW1_MODULE: &str = "wasi_snapshot_preview1";

/// Every interface the component linker defines, unversioned (all at [`WASI_P2_VERSION`]).
pub const WASI_P2_INTERFACES: &[&str] = &[
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stderr",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stderr",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:clocks/monotonic-clock",
    "wasi:clocks/wall-clock",
    "wasi:filesystem/preopens",
    "wasi:filesystem/types",
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
    "wasi:random/random",
    "wasi:sockets/instance-network",
    "wasi:sockets/ip-name-lookup",
    "wasi:sockets/network",
    "wasi:sockets/tcp",
    "wasi:sockets/tcp-create-socket",
    "wasi:sockets/udp",
    "wasi:sockets/udp-create-socket",
];

/// The `wasi:http` interfaces an HTTP component gets beyond [`WASI_P2_INTERFACES`]
/// (wasmtime-wasi-http's `add_only_http_to_linker_async`), at [`WASI_P2_VERSION`].
pub const WASI_HTTP_INTERFACES: &[&str] = &["wasi:http/outgoing-handler", "wasi:http/types"];

/// The world HTTP components are served in.
pub const PROXY_WORLD: &str = "wasi:http/proxy";

/// The export that makes a component an HTTP handler.
pub const INCOMING_HANDLER: &str = "wasi:http/incoming-handler";

/// The export that makes a component a command.
pub const CLI_RUN: &str = "wasi:cli/run";

/// The worlds components run in. A component's exports choose ([`HostWorld::for_exports`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostWorld {
    /// `wasi:cli/command`: run once, from `wasi:cli/run`.
    Command,
    /// `wasi:http/proxy`: served, one instance per request of `wasi:http/incoming-handler`.
    /// It provides everything the command world does (as `wasmtime serve` does) plus
    /// [`WASI_HTTP_INTERFACES`].
    Proxy,
}

impl HostWorld {
    /// The unversioned world name.
    pub fn unversioned(self) -> &'static str {
        match self {
            HostWorld::Command => COMMAND_WORLD,
            HostWorld::Proxy => PROXY_WORLD,
        }
    }

    /// `wasi:cli/command@0.2.12`.
    pub fn name(self) -> String {
        format!("{}@{WASI_P2_VERSION}", self.unversioned())
    }

    /// The unversioned interfaces this world provides.
    pub fn interfaces(self) -> impl Iterator<Item = &'static str> {
        let http: &[&str] = match self {
            HostWorld::Command => &[],
            HostWorld::Proxy => WASI_HTTP_INTERFACES,
        };
        WASI_P2_INTERFACES.iter().chain(http).copied()
    }

    /// Whether this world provides `unversioned`.
    pub fn provides(self, unversioned: &str) -> bool {
        self.interfaces().any(|i| i == unversioned)
    }

    /// The world as `wasmcell worlds` lists it.
    pub fn world(self) -> World {
        let mut provides: Vec<String> = self
            .interfaces()
            .map(|name| format!("{name}@{WASI_P2_VERSION}"))
            .collect();
        provides.sort();
        World {
            name: self.name(),
            kind: "component",
            provides,
        }
    }

    /// The world a component with these exports runs in: the proxy world when it exports
    /// `wasi:http/incoming-handler@0.2.x`, else the command world. Exporting both the handler
    /// and `wasi:cli/run` is refused: which one to run would be a guess.
    pub fn for_exports<'a>(
        exports: impl IntoIterator<Item = &'a str>,
    ) -> Result<HostWorld, String> {
        let (mut handler, mut run) = (None, None);
        for export in exports {
            let Some(name) = InterfaceName::parse(export) else {
                continue;
            };
            let p2 = name
                .version
                .is_some_and(|v| versions_compatible(v, WASI_P2_VERSION));
            if name.unversioned == INCOMING_HANDLER && p2 {
                handler = Some(export);
            } else if name.unversioned == CLI_RUN {
                run = Some(export);
            }
        }
        match (handler, run) {
            (Some(handler), Some(run)) => Err(format!(
                "the component exports both {run} and {handler}: wasmcell runs a command or \
                 serves HTTP, not both; build it for one world (wasi:cli/command or \
                 wasi:http/proxy)"
            )),
            (Some(_), None) => Ok(HostWorld::Proxy),
            _ => Ok(HostWorld::Command),
        }
    }

    /// The world an artifact's `component.target` names, if it is one of ours at a compatible
    /// version (an unversioned name is accepted).
    pub fn for_target(target: &str) -> Option<HostWorld> {
        let name = InterfaceName::parse(target)?;
        if !name
            .version
            .is_none_or(|v| versions_compatible(v, WASI_P2_VERSION))
        {
            return None;
        }
        [HostWorld::Command, HostWorld::Proxy]
            .into_iter()
            .find(|world| world.unversioned() == name.unversioned)
    }
}

/// The interface name preview 1's socket functions (`sock_*`) stand for in a [`Policy`]:
/// denying `wasi:sockets/*` (or `wasi:sockets/tcp`) also denies them.
pub const PREVIEW1_SOCKETS_AS: &str = "wasi:sockets/tcp";

/// A world the host provides and the names in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct World {
    /// `wasi:cli/command@0.2.12`, or `wasi_snapshot_preview1` for core modules.
    pub name: String,
    /// What kind of program runs in it: "component" or "module".
    pub kind: &'static str,
    /// Versioned interface names (components) or `module.function` names (modules), sorted.
    pub provides: Vec<String>,
}

/// The command world, versioned. Preview 1 needs the linker; see
/// [`WasmEngine::worlds`](crate::WasmEngine::worlds).
pub fn component_world() -> World {
    HostWorld::Command.world()
}

/// An import name split as the component model names interfaces:
/// `namespace:package/interface@version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InterfaceName<'a> {
    /// `wasi:cli/environment`.
    pub unversioned: &'a str,
    /// `wasi:cli`.
    pub package: &'a str,
    /// `0.2.0`, if the name has one.
    pub version: Option<&'a str>,
}

impl<'a> InterfaceName<'a> {
    /// Splits `name`; `None` for plain names (`foo`) that are not `ns:pkg/iface[@version]`.
    pub fn parse(name: &'a str) -> Option<Self> {
        let (unversioned, version) = match name.split_once('@') {
            Some((head, version)) => (head, Some(version)),
            None => (name, None),
        };
        let (package, interface) = unversioned.split_once('/')?;
        let (namespace, package_name) = package.split_once(':')?;
        if [namespace, package_name, interface]
            .iter()
            .any(|part| part.is_empty())
        {
            return None;
        }
        Some(InterfaceName {
            unversioned,
            package,
            version,
        })
    }
}

/// Whether an import at `wanted` is served by a host definition at `provided`, by the rule
/// wasmtime's linker applies: equal versions match; otherwise both must be release versions
/// with the same leading non-zero component (`0.2.0` ~ `0.2.12`, `1.0.0` ~ `1.3.1`, but not
/// `0.2` ~ `0.3`, `0.2` ~ `1.0`, and a pre-release like `0.2.0-draft` only matches itself).
/// The type-check that follows in `instantiate_pre` still has the last word.
pub fn versions_compatible(wanted: &str, provided: &str) -> bool {
    if wanted == provided {
        return true;
    }
    match (semver_key(wanted), semver_key(provided)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// `major`, or `0.minor`, or `0.0.patch`: the part of a release version that must agree.
fn semver_key(version: &str) -> Option<(u64, u64, u64)> {
    let mut parts = version.split('.');
    let mut number = || parts.next().and_then(|p| p.parse::<u64>().ok());
    let (major, minor, patch) = (number()?, number()?, number()?);
    if parts.next().is_some() {
        return None; // pre-release or build suffixes fail the parse above; extra fields here
    }
    Some(match (major, minor) {
        (0, 0) => (0, 0, patch),
        (0, minor) => (0, minor, 0),
        (major, _) => (major, 0, 0),
    })
}

/// Interfaces an operator refuses to give guests, per runtime handler.
///
/// Each entry is a pattern where `*` matches any run of characters. A pattern without `@`
/// matches names whatever their version (`wasi:sockets/*`, `wasi:http/outgoing-handler`); one
/// with `@` matches the full versioned name. Core-module imports are matched as
/// `module.function` (`wasi_snapshot_preview1.sock_*`), and preview 1's `sock_*` functions
/// also as [`PREVIEW1_SOCKETS_AS`], so one `wasi:sockets/*` entry covers both kinds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// The deny patterns, as configured.
    pub deny: Vec<String>,
    /// Where the policy came from (a file path or "containerd runtime options"), for messages.
    pub source: String,
    /// Destinations HTTP components may send requests to ([`crate::outbound`]); empty (the
    /// default): none.
    pub allow_outbound: Vec<String>,
    /// Signatures every image must carry before its container is created; `None` (the
    /// default): none are checked and nothing is fetched.
    pub require_signature: Option<SignaturePolicy>,
}

/// `require_signature = { keys = [...] }`: the cosign public keys one of which must have signed
/// the exact manifest digest of an image, and where to find its registry and credentials.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignaturePolicy {
    /// PEM public key files (`cosign.pub`); any one suffices. At least one.
    pub keys: Vec<std::path::PathBuf>,
    /// containerd's registry host directories (its `config_path`), whose `hosts.toml` mirrors
    /// are where signatures are fetched from; default `/etc/containerd/certs.d` then
    /// `/etc/docker/certs.d`.
    #[serde(default)]
    pub hosts_dirs: Vec<std::path::PathBuf>,
    /// The registry credentials file (Docker `config.json` format); default: the kubelet's
    /// `/var/lib/kubelet/config.json`, then root's Docker and Podman auth files.
    #[serde(default)]
    pub auth_file: Option<std::path::PathBuf>,
}

/// Why policy TOML was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The TOML does not parse or has unknown keys.
    #[error("parsing the wasmcell policy {source_name}: {message}")]
    Parse {
        /// Where the TOML came from.
        source_name: String,
        /// The parser's message, on one line.
        message: String,
    },
    /// A deny pattern that cannot be meant.
    #[error(
        "wasmcell policy {source_name}: deny pattern {pattern:?} is empty or contains whitespace"
    )]
    Pattern {
        /// Where the TOML came from.
        source_name: String,
        /// The pattern.
        pattern: String,
    },
    /// An `allow_outbound` entry that is not a destination.
    #[error("wasmcell policy {source_name}: {error}")]
    Outbound {
        /// Where the TOML came from.
        source_name: String,
        /// What is wrong with the entry.
        error: crate::outbound::OutboundPatternError,
    },
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyToml {
    #[serde(default)]
    deny: Vec<String>,
    #[serde(default)]
    allow_outbound: Vec<String>,
    #[serde(default)]
    require_signature: Option<SignaturePolicy>,
    // The shim config file also says how the shim groups containers; that is the shim's.
    #[serde(default, rename = "group")]
    _group: Option<toml::Value>,
    // containerd's CRI copies a runtime's whole `options` table to the shim; these two keys
    // belong to containerd, not to the policy.
    #[serde(default, rename = "TypeUrl")]
    _type_url: Option<toml::Value>,
    #[serde(default, rename = "ConfigPath")]
    _config_path: Option<toml::Value>,
}

impl Policy {
    /// Parses policy TOML: `deny = ["pattern", ...]`, `allow_outbound = ["destination",
    /// ...]` and `require_signature = { keys = [...] }`, all optional; unknown keys are errors, so a misspelt key cannot silently allow
    /// everything. `source_name` says where it came from.
    pub fn from_toml(text: &str, source_name: &str) -> Result<Policy, PolicyError> {
        let parsed: PolicyToml = toml::from_str(text).map_err(|e| PolicyError::Parse {
            source_name: source_name.to_owned(),
            message: e.to_string().trim().replace('\n', " "),
        })?;
        if let Some(bad) = parsed
            .deny
            .iter()
            .find(|p| p.is_empty() || p.chars().any(char::is_whitespace))
        {
            return Err(PolicyError::Pattern {
                source_name: source_name.to_owned(),
                pattern: bad.clone(),
            });
        }
        crate::outbound::validate(&parsed.allow_outbound).map_err(|error| {
            PolicyError::Outbound {
                source_name: source_name.to_owned(),
                error,
            }
        })?;
        if parsed
            .require_signature
            .as_ref()
            .is_some_and(|r| r.keys.is_empty())
        {
            return Err(PolicyError::Parse {
                source_name: source_name.to_owned(),
                message: "require_signature lists no keys".to_owned(),
            });
        }
        Ok(Policy {
            deny: parsed.deny,
            source: source_name.to_owned(),
            allow_outbound: parsed.allow_outbound,
            require_signature: parsed.require_signature,
        })
    }
}

impl Policy {
    /// The first pattern that denies a component import `name`.
    pub fn denies_component_import(&self, name: &str) -> Option<&str> {
        let unversioned = InterfaceName::parse(name).map_or(name, |n| n.unversioned);
        self.deny
            .iter()
            .find(|pattern| {
                let subject = if pattern.contains('@') {
                    name
                } else {
                    unversioned
                };
                glob_match(pattern, subject)
            })
            .map(String::as_str)
    }

    /// The first pattern that denies the core-module import `module`.`function`.
    pub fn denies_module_import(&self, module: &str, function: &str) -> Option<&str> {
        let full = format!("{module}.{function}");
        let as_interface = (module == PREVIEW1_MODULE && function.starts_with("sock_"))
            .then_some(PREVIEW1_SOCKETS_AS);
        self.deny
            .iter()
            .find(|pattern| {
                glob_match(pattern, &full)
                    || as_interface.is_some_and(|name| glob_match(pattern, name))
            })
            .map(String::as_str)
    }
}

/// `*` matches any (possibly empty) run of characters; everything else matches itself.
fn glob_match(pattern: &str, subject: &str) -> bool {
    let Some((first, rest)) = pattern.split_once('*') else {
        return pattern == subject;
    };
    let Some(mut remaining) = subject.strip_prefix(first) else {
        return false;
    };
    let mut pieces: Vec<&str> = rest.split('*').collect();
    let last = pieces.pop().unwrap_or_default();
    for piece in pieces {
        match remaining.find(piece) {
            Some(at) => remaining = &remaining[at + piece.len()..],
            None => return false,
        }
    }
    remaining.len() >= last.len() && remaining.ends_with(last)
}

/// One import the host will not give a guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The import as the guest names it (`wasi:keyvalue/store@0.2.0-draft`, `env.foo`).
    pub import: String,
    /// Why.
    pub reason: RefusedBecause,
}

/// Why an import is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefusedBecause {
    /// No definition by that name at a compatible version. `instead` lists what the host has
    /// in the same package (other versions or siblings), possibly nothing.
    NotProvided { instead: Vec<String> },
    /// Provided, but an operator's deny pattern matches it.
    Denied { pattern: String, source: String },
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reason {
            RefusedBecause::NotProvided { instead } if instead.is_empty() => {
                write!(f, "{} (not provided by this host)", self.import)
            }
            RefusedBecause::NotProvided { instead } => write!(
                f,
                "{} (not provided; the host has {})",
                self.import,
                instead.join(", ")
            ),
            RefusedBecause::Denied { pattern, source } => {
                write!(
                    f,
                    "{} (denied by policy {pattern:?} from {source})",
                    self.import
                )
            }
        }
    }
}

/// Every import of a guest the host refuses, and how to say so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The refused imports, in the guest's order.
    pub refused: Vec<Refused>,
    /// The world the guest was checked against (`wasi:cli/command@0.2.12`).
    pub world: String,
}

impl Refusal {
    /// `Ok` when nothing was refused, else the refusal against `world`.
    fn unless_empty(refused: Vec<Refused>, world: String) -> Result<(), Refusal> {
        if refused.is_empty() {
            Ok(())
        } else {
            Err(Refusal { refused, world })
        }
    }
}

/// Refused imports a [`Refusal`]'s message names; the rest are counted. The message goes to
/// containerd's log and a pod's status, which a binary with 100,000 imports would flood.
pub const REFUSALS_NAMED: usize = 20;

impl fmt::Display for Refusal {
    /// The count, the world and the first [`REFUSALS_NAMED`] refusals, then `and N more`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.refused.len();
        write!(
            f,
            "{count} import{} cannot be satisfied on this host ({}): ",
            if count == 1 { "" } else { "s" },
            self.world
        )?;
        for (i, refused) in self.refused.iter().take(REFUSALS_NAMED).enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{refused}")?;
        }
        if count > REFUSALS_NAMED {
            write!(f, "; and {} more", count - REFUSALS_NAMED)?;
        }
        Ok(())
    }
}

/// Checks component import names against what `world` provides and `policy`, collecting
/// every refusal. Names that are not interfaces (plain `foo`) are never provided.
pub fn check_component_names<'a>(
    world: HostWorld,
    imports: impl IntoIterator<Item = &'a str>,
    policy: &Policy,
) -> Result<(), Refusal> {
    let refused = imports
        .into_iter()
        .filter_map(|import| {
            let reason = component_refusal(world, import, policy)?;
            Some(Refused {
                import: import.to_owned(),
                reason,
            })
        })
        .collect();
    Refusal::unless_empty(refused, world.name())
}

/// Checks core-module imports (`(module, function)`) against the preview 1 functions the
/// module linker defines (`provided`) and `policy`, collecting every refusal.
pub fn check_module_names<'a>(
    imports: impl IntoIterator<Item = (&'a str, &'a str)>,
    provided: &[String],
    policy: &Policy,
) -> Result<(), Refusal> {
    let refused = imports
        .into_iter()
        .filter_map(|(module, name)| {
            let reason = if module != PREVIEW1_MODULE {
                RefusedBecause::NotProvided {
                    instead: vec![format!("{PREVIEW1_MODULE}.*")],
                }
            } else if !provided.iter().any(|f| f == name) {
                RefusedBecause::NotProvided { instead: vec![] }
            } else {
                let pattern = policy.denies_module_import(module, name)?;
                RefusedBecause::Denied {
                    pattern: pattern.to_owned(),
                    source: policy.source.clone(),
                }
            };
            Some(Refused {
                import: format!("{module}.{name}"),
                reason,
            })
        })
        .collect();
    Refusal::unless_empty(refused, PREVIEW1_MODULE.to_owned())
}

/// Checks what an artifact's wasm config declares, without the binary: its `target` world,
/// when set, must be one of the host's worlds at a compatible version (an unversioned name is
/// accepted), and its `component.imports` are checked (as [`check_component_names`]) against
/// that world, or, without a target, the world its declared `exports` choose. The binary check
/// has the last word.
pub fn check_declared(
    imports: &[String],
    exports: &[String],
    target: Option<&str>,
    policy: &Policy,
) -> Result<(), Refusal> {
    let by_exports = HostWorld::for_exports(exports.iter().map(String::as_str));
    let world = match (target, &by_exports) {
        (Some(target), _) => HostWorld::for_target(target),
        (None, Ok(world)) => Some(*world),
        (None, Err(_)) => None,
    };
    let checked = world.unwrap_or(HostWorld::Command);
    let mut refused =
        match check_component_names(checked, imports.iter().map(String::as_str), policy) {
            Ok(()) => Vec::new(),
            Err(refusal) => refusal.refused,
        };
    match (target, world, by_exports) {
        (Some(target), None, _) => refused.push(Refused {
            import: format!("target world {target}"),
            reason: RefusedBecause::NotProvided {
                instead: vec![HostWorld::Command.name(), HostWorld::Proxy.name()],
            },
        }),
        (_, _, Err(both)) => refused.push(Refused {
            import: "exports".to_owned(),
            reason: RefusedBecause::NotProvided {
                instead: vec![both],
            },
        }),
        _ => {}
    }
    Refusal::unless_empty(refused, checked.name())
}

fn component_refusal(world: HostWorld, import: &str, policy: &Policy) -> Option<RefusedBecause> {
    let provided = InterfaceName::parse(import).is_some_and(|name| {
        world.provides(name.unversioned)
            && name
                .version
                .is_some_and(|v| versions_compatible(v, WASI_P2_VERSION))
    });
    if !provided {
        let instead = InterfaceName::parse(import)
            .map(|name| {
                world
                    .interfaces()
                    .filter(|host| {
                        if *host == name.unversioned {
                            return true;
                        }
                        // Siblings only help when the interface itself is missing.
                        !world.provides(name.unversioned)
                            && host.split('/').next() == Some(name.package)
                    })
                    .map(|host| format!("{host}@{WASI_P2_VERSION}"))
                    .collect()
            })
            .unwrap_or_default();
        return Some(RefusedBecause::NotProvided { instead });
    }
    policy
        .denies_component_import(import)
        .map(|pattern| RefusedBecause::Denied {
            pattern: pattern.to_owned(),
            source: policy.source.clone(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_of_100_000_imports_names_the_first_twenty() {
        let names: Vec<String> = (0..100_000).map(|n| format!("foo{n}")).collect();
        let Err(refusal) = check_component_names(
            HostWorld::Command,
            names.iter().map(String::as_str),
            &policy(&[]),
        ) else {
            panic!("expected a refusal");
        };
        assert_eq!(refusal.refused.len(), 100_000);
        let text = refusal.to_string();
        assert!(
            text.starts_with("100000 imports cannot be satisfied on this host"),
            "{text}"
        );
        assert!(text.contains("foo19 (not provided by this host)"), "{text}");
        assert!(!text.contains("foo20 "), "{text}");
        assert!(text.ends_with("; and 99980 more"), "{text}");
        assert!(text.len() < 2048, "{} bytes", text.len());
    }

    #[test]
    fn semver_follows_the_linker_rule() {
        assert!(versions_compatible("0.2.0", "0.2.12"));
        assert!(versions_compatible("0.2.13", "0.2.12"));
        assert!(!versions_compatible("0.3.0", "0.2.12"));
        assert!(!versions_compatible("1.0.0", "0.2.12"));
        assert!(versions_compatible("1.0.0", "1.4.2"));
        assert!(!versions_compatible("0.0.1", "0.0.2"));
        assert!(!versions_compatible("0.2.0-draft", "0.2.12"));
        assert!(versions_compatible("0.2.0-draft", "0.2.0-draft"));
        assert!(!versions_compatible("0.2", "0.2.12"));
    }

    #[test]
    fn globs() {
        assert!(glob_match("wasi:sockets/*", "wasi:sockets/tcp"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "aXbYc"));
        assert!(!glob_match("a*b*c", "aXbY"));
        assert!(glob_match(
            "wasi_snapshot_preview1.sock_*",
            "wasi_snapshot_preview1.sock_send"
        ));
        assert!(!glob_match(
            "wasi:sockets/tcp",
            "wasi:sockets/tcp-create-socket"
        ));
        assert!(glob_match("*-socket", "wasi:sockets/tcp-create-socket"));
    }

    fn policy(deny: &[&str]) -> Policy {
        Policy {
            deny: deny.iter().map(|s| s.to_string()).collect(),
            source: "test".into(),
            ..Policy::default()
        }
    }

    #[test]
    fn every_refusal_is_listed_with_what_the_host_has_instead() {
        let imports = [
            "wasi:cli/environment@0.2.0",
            "wasi:keyvalue/store@0.2.0-draft",
            "wasi:cli/environment@0.3.0",
            "wasi:cli/nonesuch@0.2.0",
            "wasi:sockets/tcp@0.2.3",
            "foo",
            "wasi:io/streams",
        ];
        let refusal =
            check_component_names(HostWorld::Command, imports, &policy(&["wasi:sockets/*"]));
        let Err(refusal) = refusal else {
            panic!("expected a refusal");
        };
        let text = refusal.to_string();
        assert!(
            text.starts_with(
                "6 imports cannot be satisfied on this host (wasi:cli/command@0.2.12): "
            ),
            "{text}"
        );
        assert!(
            text.contains("wasi:keyvalue/store@0.2.0-draft (not provided by this host)"),
            "{text}"
        );
        assert!(text.contains("wasi:cli/environment@0.3.0 (not provided; the host has wasi:cli/environment@0.2.12)"), "{text}");
        assert!(text.contains("wasi:cli/nonesuch@0.2.0 (not provided; the host has wasi:cli/environment@0.2.12, wasi:cli/exit@0.2.12"), "{text}");
        assert!(
            text.contains("wasi:sockets/tcp@0.2.3 (denied by policy \"wasi:sockets/*\" from test)"),
            "{text}"
        );
        assert!(text.contains("foo (not provided by this host)"), "{text}");
        assert!(
            text.contains("wasi:io/streams (not provided; the host has wasi:io/streams@0.2.12)"),
            "{text}"
        );
        assert!(!text.contains("environment@0.2.0 "), "{text}");
    }

    #[test]
    fn declared_targets_must_be_a_host_world() {
        let ok = ["wasi:cli/environment@0.2.0".to_owned()];
        let http = [
            "wasi:http/types@0.2.0".to_owned(),
            "wasi:http/outgoing-handler@0.2.3".to_owned(),
        ];
        let handler = ["wasi:http/incoming-handler@0.2.0".to_owned()];
        let none = Policy::default();
        let check = |imports: &[String], exports: &[String], target| {
            check_declared(imports, exports, target, &none)
                .err()
                .map(|r| r.to_string())
        };
        assert_eq!(check(&ok, &[], Some("wasi:cli/command@0.2.0")), None);
        assert_eq!(check(&ok, &[], Some("wasi:cli/command")), None);
        assert_eq!(check(&ok, &[], None), None);
        assert_eq!(check(&http, &handler, Some("wasi:http/proxy@0.2.0")), None);
        assert_eq!(
            check(&http, &handler, None),
            None,
            "the exports choose the world"
        );
        let text = check(&http, &[], Some("wasi:cli/command@0.2.0")).unwrap_or_default();
        assert!(
            text.contains("(wasi:cli/command@0.2.12)")
                && text.contains("wasi:http/types@0.2.0 (not provided by this host)"),
            "{text}"
        );
        let text = check(&ok, &[], Some("wasi:http/proxy@0.3.0")).unwrap_or_default();
        assert!(
            text.contains(
                "target world wasi:http/proxy@0.3.0 (not provided; the host has \
                 wasi:cli/command@0.2.12, wasi:http/proxy@0.2.12)"
            ),
            "{text}"
        );
        assert!(check(&ok, &[], Some("wasi:cli/command@0.3.0")).is_some());
        let both = [handler[0].clone(), "wasi:cli/run@0.2.0".to_owned()];
        let text = check(&http, &both, None).unwrap_or_default();
        assert!(
            text.contains("exports both wasi:cli/run@0.2.0 and"),
            "{text}"
        );
    }

    #[test]
    fn the_exports_choose_the_world() {
        assert_eq!(
            HostWorld::for_exports(["wasi:http/incoming-handler@0.2.12"]),
            Ok(HostWorld::Proxy)
        );
        assert_eq!(
            HostWorld::for_exports(["wasi:cli/run@0.2.0"]),
            Ok(HostWorld::Command)
        );
        assert_eq!(HostWorld::for_exports([]), Ok(HostWorld::Command));
        // A 0.3 handler is not ours (yet): checked as a command, which refuses it clearly.
        assert_eq!(
            HostWorld::for_exports(["wasi:http/incoming-handler@0.3.0"]),
            Ok(HostWorld::Command)
        );
        assert!(
            HostWorld::for_exports(["wasi:cli/run@0.2.0", "wasi:http/incoming-handler@0.2.0"])
                .is_err()
        );
    }

    #[test]
    fn policy_toml_is_strict() {
        let ok = Policy::from_toml("TypeUrl = \"x\"\ndeny = [\"wasi:sockets/*\"]\n", "opts");
        assert_eq!(ok.map(|p| p.deny), Ok(vec!["wasi:sockets/*".to_owned()]));
        let err = Policy::from_toml("deny = \"wasi:sockets/*\"", "/etc/x.toml")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.starts_with("parsing the wasmcell policy /etc/x.toml:"),
            "{err}"
        );
        let err = Policy::from_toml("denny = []", "/etc/x.toml")
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("denny")));
        let err = Policy::from_toml("deny = [\"\"]", "/etc/x.toml")
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("empty or contains whitespace")));
        let ok = Policy::from_toml("allow_outbound = [\"http://127.0.0.1:9000\"]", "opts");
        assert_eq!(
            ok.map(|p| p.allow_outbound),
            Ok(vec!["http://127.0.0.1:9000".to_owned()])
        );
        let err = Policy::from_toml("allow_outbound = [\"127.0.0.1\"]", "/etc/x.toml")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.starts_with("wasmcell policy /etc/x.toml: allow_outbound entry \"127.0.0.1\":"),
            "{err}"
        );
    }

    #[test]
    fn policy_covers_versions_and_preview1_sockets() {
        let p = policy(&[
            "wasi:sockets/*",
            "wasi:http/outgoing-handler",
            "wasi:random/random@0.2.0",
        ]);
        assert_eq!(
            p.denies_component_import("wasi:sockets/udp@0.2.0"),
            Some("wasi:sockets/*")
        );
        assert_eq!(
            p.denies_component_import("wasi:http/outgoing-handler@0.2.4"),
            Some("wasi:http/outgoing-handler")
        );
        assert_eq!(p.denies_component_import("wasi:random/random@0.2.12"), None);
        assert!(
            p.denies_component_import("wasi:random/random@0.2.0")
                .is_some()
        );
        assert_eq!(
            p.denies_module_import(PREVIEW1_MODULE, "sock_accept"),
            Some("wasi:sockets/*")
        );
        assert_eq!(p.denies_module_import(PREVIEW1_MODULE, "fd_write"), None);
        let exact = policy(&["wasi_snapshot_preview1.sock_send"]);
        assert!(
            exact
                .denies_module_import(PREVIEW1_MODULE, "sock_send")
                .is_some()
        );
        assert!(
            exact
                .denies_module_import(PREVIEW1_MODULE, "sock_recv")
                .is_none()
        );
    }
}

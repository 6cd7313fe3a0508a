//! What this host offers guests, and the name-level checks against it.
//!
//! - [`WASI_P2_INTERFACES`] at [`WASI_P2_VERSION`] are exactly what the component linker in
//!   `run.rs` defines (wasmtime-wasi's `p2::add_to_linker_async`); a test probes every entry
//!   against that linker so the table cannot drift from it. Preview 1 functions come from the
//!   module linker itself ([`WasmEngine::preview1_functions`](crate::WasmEngine)).
//! - [`check_component_names`] checks import names (as found in a wasm config or a binary)
//!   with the linker's semver rule and an operator's [`Policy`], and reports *every* problem,
//!   which wasmtime's type-check (first error only) cannot. It needs no engine and no binary,
//!   so the shim runs it on an artifact's config before the wasm layer is read.

use std::fmt;

/// The WASI 0.2 release the host implements (the wit of the pinned wasmtime-wasi).
pub const WASI_P2_VERSION: &str = "0.2.12";

/// The WASI 0.3 release the host implements (wasmtime-wasi's and wasmtime-wasi-http's `p3`
/// wit). Imports at any `0.3.x` match it, by the linker's semver rule.
pub const WASI_P3_VERSION: &str = "0.3.0";

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

/// Every WASI 0.3 interface the 0.3 linkers define (wasmtime-wasi's `p3::add_to_linker`),
/// unversioned (all at [`WASI_P3_VERSION`]). Streams, futures and polling are part of the
/// component model in 0.3, so `wasi:io` has no 0.3 release.
pub const WASI_P3_INTERFACES: &[&str] = &[
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
    "wasi:cli/types",
    "wasi:clocks/monotonic-clock",
    "wasi:clocks/system-clock",
    "wasi:clocks/types",
    "wasi:filesystem/preopens",
    "wasi:filesystem/types",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
    "wasi:random/random",
    "wasi:sockets/ip-name-lookup",
    "wasi:sockets/types",
];

/// The `wasi:http` 0.3 interfaces a 0.3 HTTP component gets beyond [`WASI_P3_INTERFACES`]
/// (wasmtime-wasi-http's `p3::add_to_linker`), at [`WASI_P3_VERSION`].
pub const WASI_P3_HTTP_INTERFACES: &[&str] = &["wasi:http/client", "wasi:http/types"];

/// The world HTTP components are served in.
pub const PROXY_WORLD: &str = "wasi:http/proxy";

/// The world WASI 0.3 HTTP components are served in.
pub const SERVICE_WORLD: &str = "wasi:http/service";

/// The export that makes a component an HTTP handler.
pub const INCOMING_HANDLER: &str = "wasi:http/incoming-handler";

/// The WASI 0.3 export that makes a component an HTTP handler.
pub const HANDLER: &str = "wasi:http/handler";

/// The export that makes a component a command.
pub const CLI_RUN: &str = "wasi:cli/run";

/// The worlds components run in. A component's exports choose ([`HostWorld::for_exports`]).
///
/// The 0.3 worlds also provide every 0.2 interface of their 0.2 counterpart, as `wasmtime run`
/// and `wasmtime serve` do: a 0.3 component built from Rust or C today still imports 0.2
/// interfaces through its standard library. 0.2 worlds never provide 0.3 interfaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostWorld {
    /// `wasi:cli/command@0.2`: run once, from `wasi:cli/run@0.2.x`.
    Command,
    /// `wasi:http/proxy@0.2`: served, one instance per request of
    /// `wasi:http/incoming-handler@0.2.x`. It provides everything the command world does (as
    /// `wasmtime serve` does) plus [`WASI_HTTP_INTERFACES`].
    Proxy,
    /// `wasi:cli/command@0.3`: run once, from the async `wasi:cli/run@0.3.x`.
    CommandP3,
    /// `wasi:http/service@0.3`: served from `wasi:http/handler@0.3.x`, each instance taking
    /// several requests, concurrently and one after another. It provides everything
    /// [`HostWorld::CommandP3`] does plus [`WASI_HTTP_INTERFACES`] and
    /// [`WASI_P3_HTTP_INTERFACES`].
    ServiceP3,
}

impl HostWorld {
    /// Every world, in the order `wasmcell worlds` lists them.
    pub const ALL: [HostWorld; 4] = [
        HostWorld::Command,
        HostWorld::Proxy,
        HostWorld::CommandP3,
        HostWorld::ServiceP3,
    ];

    /// The unversioned world name.
    pub fn unversioned(self) -> &'static str {
        match self {
            HostWorld::Command | HostWorld::CommandP3 => COMMAND_WORLD,
            HostWorld::Proxy => PROXY_WORLD,
            HostWorld::ServiceP3 => SERVICE_WORLD,
        }
    }

    /// The WASI release of the world itself: [`WASI_P2_VERSION`] or [`WASI_P3_VERSION`].
    pub fn version(self) -> &'static str {
        match self {
            HostWorld::Command | HostWorld::Proxy => WASI_P2_VERSION,
            HostWorld::CommandP3 | HostWorld::ServiceP3 => WASI_P3_VERSION,
        }
    }

    /// Whether components of this world are served over HTTP rather than run once.
    pub fn is_served(self) -> bool {
        matches!(self, HostWorld::Proxy | HostWorld::ServiceP3)
    }

    /// `wasi:cli/command@0.2.12`.
    pub fn name(self) -> String {
        format!("{}@{}", self.unversioned(), self.version())
    }

    /// The interfaces this world provides: (unversioned name, version).
    pub fn interfaces(self) -> impl Iterator<Item = (&'static str, &'static str)> {
        let at = |names: &'static [&'static str], version: &'static str| {
            names.iter().map(move |name| (*name, version))
        };
        let none: &[&str] = &[];
        let (p2_http, p3, p3_http) = match self {
            HostWorld::Command => (none, none, none),
            HostWorld::Proxy => (WASI_HTTP_INTERFACES, none, none),
            HostWorld::CommandP3 => (none, WASI_P3_INTERFACES, none),
            HostWorld::ServiceP3 => (
                WASI_HTTP_INTERFACES,
                WASI_P3_INTERFACES,
                WASI_P3_HTTP_INTERFACES,
            ),
        };
        at(WASI_P2_INTERFACES, WASI_P2_VERSION)
            .chain(at(p2_http, WASI_P2_VERSION))
            .chain(at(p3, WASI_P3_VERSION))
            .chain(at(p3_http, WASI_P3_VERSION))
    }

    /// Whether this world provides `unversioned` at a version compatible with `version`.
    pub fn provides(self, unversioned: &str, version: &str) -> bool {
        self.interfaces()
            .any(|(name, at)| name == unversioned && versions_compatible(version, at))
    }

    /// The world as `wasmcell worlds` lists it.
    pub fn world(self) -> World {
        let mut provides: Vec<String> = self
            .interfaces()
            .map(|(name, version)| format!("{name}@{version}"))
            .collect();
        provides.sort();
        World {
            name: self.name(),
            kind: "component",
            provides,
        }
    }

    /// The world a component with these exports runs in: a served world when it exports
    /// `wasi:http/incoming-handler@0.2.x` or `wasi:http/handler@0.3.x`, else a command world,
    /// 0.3 when it exports `wasi:cli/run@0.3.x`. Exporting both a handler and `wasi:cli/run`
    /// is refused: which one to run would be a guess.
    pub fn for_exports<'a>(
        exports: impl IntoIterator<Item = &'a str>,
    ) -> Result<HostWorld, String> {
        let (mut handler, mut run) = (None, None);
        for export in exports {
            let Some(name) = InterfaceName::parse(export) else {
                continue;
            };
            let at = |version| {
                name.version
                    .is_some_and(|v| versions_compatible(v, version))
            };
            if name.unversioned == INCOMING_HANDLER && at(WASI_P2_VERSION) {
                handler = Some((export, HostWorld::Proxy));
            } else if name.unversioned == HANDLER && at(WASI_P3_VERSION) {
                handler = Some((export, HostWorld::ServiceP3));
            } else if name.unversioned == CLI_RUN {
                let world = if at(WASI_P3_VERSION) {
                    HostWorld::CommandP3
                } else {
                    HostWorld::Command
                };
                run = Some((export, world));
            }
        }
        match (handler, run) {
            (Some((handler, _)), Some((run, _))) => Err(format!(
                "the component exports both {run} and {handler}: wasmcell runs a command or \
                 serves HTTP, not both; build it for one world (wasi:cli/command, \
                 wasi:http/proxy or wasi:http/service)"
            )),
            (Some((_, world)), None) | (None, Some((_, world))) => Ok(world),
            (None, None) => Ok(HostWorld::Command),
        }
    }

    /// The world an artifact's `component.target` names, if it is one of ours at a compatible
    /// version. An unversioned name is the first world of that name in [`HostWorld::ALL`]: the
    /// 0.2 one where there are both, as before 0.3 existed.
    pub fn for_target(target: &str) -> Option<HostWorld> {
        let name = InterfaceName::parse(target)?;
        HostWorld::ALL.into_iter().find(|world| {
            world.unversioned() == name.unversioned
                && name
                    .version
                    .is_none_or(|v| versions_compatible(v, world.version()))
        })
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
    /// `sync_rootfs = true`: the rootfs overlay is mounted as containerd gives it, so a guest's
    /// `fsync` of a rootfs file reaches the disk and every stop syncs the filesystem holding
    /// the writable layer. `false` (the default): it is mounted `volatile`, and a stop syncs
    /// only when the guest left files in it (the shim's `writable_layer`).
    pub sync_rootfs: bool,
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
    #[serde(default)]
    sync_rootfs: bool,
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
    /// ...]`, `require_signature = { keys = [...] }` and `sync_rootfs = true`, all optional;
    /// unknown keys are errors, so a misspelt key cannot silently allow everything.
    /// `source_name` says where it came from.
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
            sync_rootfs: parsed.sync_rootfs,
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

/// One import the host will not give a guest (or one export it will not run).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The import as the guest names it (`wasi:keyvalue/store@0.2.0-draft`, `env.foo`); for
    /// [`RefusedBecause::DeniedExport`], the export.
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
    /// The export that would be run or served (`wasi:cli/run`, `wasi:http/incoming-handler`,
    /// `wasi:http/handler`) matches an operator's deny pattern: the host does not run that
    /// kind of component.
    DeniedExport { pattern: String, source: String },
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
            RefusedBecause::DeniedExport { pattern, source } => {
                write!(
                    f,
                    "export {} (this host does not run it: denied by policy {pattern:?} from \
                     {source})",
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

/// Checks component import names against what `world` provides and `policy`, and the exports
/// that would be run or served against `policy`, collecting every refusal (imports first).
/// Names that are not interfaces (plain `foo`) are never provided.
pub fn check_component_names<'a>(
    world: HostWorld,
    imports: impl IntoIterator<Item = &'a str>,
    exports: impl IntoIterator<Item = &'a str>,
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
        .chain(denied_entry_exports(exports, policy))
        .collect();
    Refusal::unless_empty(refused, world.name())
}

/// The exports a host runs or serves (`wasi:cli/run`, `wasi:http/incoming-handler`,
/// `wasi:http/handler`, any version) that a deny pattern matches, by the same rule as imports:
/// `deny = ["wasi:http/handler@0.3.*"]` refuses WASI 0.3 HTTP components.
fn denied_entry_exports<'a>(
    exports: impl IntoIterator<Item = &'a str>,
    policy: &Policy,
) -> impl Iterator<Item = Refused> {
    exports.into_iter().filter_map(move |export| {
        let name = InterfaceName::parse(export)?;
        if ![CLI_RUN, INCOMING_HANDLER, HANDLER].contains(&name.unversioned) {
            return None;
        }
        let pattern = policy.denies_component_import(export)?;
        Some(Refused {
            import: export.to_owned(),
            reason: RefusedBecause::DeniedExport {
                pattern: pattern.to_owned(),
                source: policy.source.clone(),
            },
        })
    })
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
pub fn check_declared<'a>(
    imports: &'a [String],
    exports: &'a [String],
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
    let names = |list: &'a [String]| list.iter().map(String::as_str);
    let mut refused = match check_component_names(checked, names(imports), names(exports), policy) {
        Ok(()) => Vec::new(),
        Err(refusal) => refusal.refused,
    };
    match (target, world, by_exports) {
        (Some(target), None, _) => refused.push(Refused {
            import: format!("target world {target}"),
            reason: RefusedBecause::NotProvided {
                instead: HostWorld::ALL.iter().map(|world| world.name()).collect(),
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
        name.version
            .is_some_and(|v| world.provides(name.unversioned, v))
    });
    if !provided {
        let instead = InterfaceName::parse(import)
            .map(|name| {
                let any_version = world.interfaces().any(|(host, _)| host == name.unversioned);
                world
                    .interfaces()
                    .filter(|(host, _)| {
                        if *host == name.unversioned {
                            return true;
                        }
                        // Siblings only help when the interface itself is missing.
                        !any_version && host.split('/').next() == Some(name.package)
                    })
                    .map(|(host, version)| format!("{host}@{version}"))
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
            [],
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
        let refusal = check_component_names(
            HostWorld::Command,
            imports,
            ["wasi:cli/run@0.2.0"],
            &policy(&["wasi:sockets/*"]),
        );
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
    fn the_0_3_worlds_add_0_3_interfaces_to_0_2() {
        // What a 0.3 command built from Rust imports: 0.3 for its own calls, 0.2 through std.
        let rust_p3 = [
            "wasi:cli/stdout@0.2.6",
            "wasi:io/streams@0.2.6",
            "wasi:cli/stdout@0.3.0",
            "wasi:cli/types@0.3.0",
            "wasi:clocks/types@0.3.0",
            "wasi:filesystem/preopens@0.3.2",
        ];
        let none = policy(&[]);
        assert_eq!(
            check_component_names(HostWorld::CommandP3, rust_p3, [], &none),
            Ok(())
        );
        let Err(refusal) = check_component_names(HostWorld::Command, rust_p3, [], &none) else {
            panic!("a 0.2 command gets no 0.3 interfaces");
        };
        assert_eq!(refusal.refused.len(), 4, "{refusal}");
        assert!(
            refusal.to_string().contains(
                "wasi:cli/stdout@0.3.0 (not provided; the host has wasi:cli/stdout@0.2.12)"
            ),
            "{refusal}"
        );
        let http = ["wasi:http/types@0.3.0", "wasi:http/client@0.3.1"];
        assert_eq!(
            check_component_names(HostWorld::ServiceP3, http, [], &none),
            Ok(())
        );
        let Err(refusal) = check_component_names(HostWorld::CommandP3, http, [], &none) else {
            panic!("a command gets no wasi:http");
        };
        assert!(
            refusal
                .to_string()
                .contains("wasi:http/client@0.3.1 (not provided by this host)"),
            "{refusal}"
        );
        // 0.4 is not 0.3, nor a pre-release of 0.3.0.
        for wanted in [
            "wasi:cli/stdout@0.4.0",
            "wasi:cli/stdout@0.3.0-rc-2025-09-16",
        ] {
            assert!(
                check_component_names(HostWorld::CommandP3, [wanted], [], &none).is_err(),
                "{wanted}"
            );
        }
        assert_eq!(HostWorld::ServiceP3.name(), "wasi:http/service@0.3.0");
        assert_eq!(HostWorld::CommandP3.name(), "wasi:cli/command@0.3.0");
        assert!(HostWorld::ServiceP3.is_served() && !HostWorld::CommandP3.is_served());
    }

    #[test]
    fn a_policy_can_deny_the_export_a_component_is_run_by() {
        let deny = policy(&["wasi:http/handler@0.3.0"]);
        let Err(refusal) = check_component_names(
            HostWorld::ServiceP3,
            ["wasi:http/types@0.3.0"],
            ["wasi:http/handler@0.3.0"],
            &deny,
        ) else {
            panic!("the handler export is denied");
        };
        assert_eq!(
            refusal.to_string(),
            "1 import cannot be satisfied on this host (wasi:http/service@0.3.0): export \
             wasi:http/handler@0.3.0 (this host does not run it: denied by policy \
             \"wasi:http/handler@0.3.0\" from test)"
        );
        // Exports that are not entry points are never matched; 0.2 handlers are not 0.3's.
        assert_eq!(
            check_component_names(
                HostWorld::Proxy,
                [],
                ["wasi:http/incoming-handler@0.2.0", "my:lib/handler@0.3.0"],
                &deny
            ),
            Ok(())
        );
        let every_version = policy(&["wasi:http/handler"]);
        assert!(
            check_declared(
                &[],
                &["wasi:http/handler@0.3.1".to_owned()],
                None,
                &every_version
            )
            .is_err()
        );
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
                 wasi:cli/command@0.2.12, wasi:http/proxy@0.2.12, wasi:cli/command@0.3.0, \
                 wasi:http/service@0.3.0)"
            ),
            "{text}"
        );
        assert_eq!(check(&ok, &[], Some("wasi:cli/command@0.3.0")), None);
        // A config that claims 0.3 imports for a 0.2 target is refused by name.
        let p3 = ["wasi:cli/stdout@0.3.0".to_owned()];
        let text = check(&p3, &[], Some("wasi:cli/command@0.2.0")).unwrap_or_default();
        assert!(
            text.contains(
                "wasi:cli/stdout@0.3.0 (not provided; the host has wasi:cli/stdout@0.2.12)"
            ),
            "{text}"
        );
        let service = ["wasi:http/handler@0.3.0".to_owned()];
        let p3_http = ["wasi:http/types@0.3.0".to_owned()];
        assert_eq!(check(&p3_http, &service, None), None);
        assert_eq!(
            check(&p3_http, &service, Some("wasi:http/service@0.3.2")),
            None
        );
        assert_eq!(check(&p3_http, &service, Some("wasi:http/service")), None);
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
        // 0.3's handler is `wasi:http/handler`; an `incoming-handler@0.3` is no world of ours
        // and is checked as a command, which refuses it clearly.
        assert_eq!(
            HostWorld::for_exports(["wasi:http/incoming-handler@0.3.0"]),
            Ok(HostWorld::Command)
        );
        assert_eq!(
            HostWorld::for_exports(["wasi:http/handler@0.3.2"]),
            Ok(HostWorld::ServiceP3)
        );
        assert_eq!(
            HostWorld::for_exports(["wasi:cli/run@0.3.0"]),
            Ok(HostWorld::CommandP3)
        );
        assert!(HostWorld::for_exports(["wasi:cli/run@0.3.0", "wasi:http/handler@0.3.0"]).is_err());
        assert_eq!(
            HostWorld::for_target("wasi:http/service@0.3.1"),
            Some(HostWorld::ServiceP3)
        );
        assert_eq!(
            HostWorld::for_target("wasi:cli/command"),
            Some(HostWorld::Command)
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
        assert_eq!(
            Policy::from_toml("sync_rootfs = true", "opts").map(|p| p.sync_rootfs),
            Ok(true)
        );
        assert_eq!(
            Policy::from_toml("", "opts").map(|p| p.sync_rootfs),
            Ok(false)
        );
        let err = Policy::from_toml("sync_rootfs = \"yes\"", "/etc/x.toml")
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("sync_rootfs")));
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

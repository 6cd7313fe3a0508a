//! Seccomp, the last brick of the second wall.
//!
//! This module owns two things:
//!
//! - **Compiling**, in the shim at create: the container's `linux.seccomp` profile (OCI runtime
//!   spec), or wasmcell's own [default filter](SeccompFilters::default_filter) when the spec has
//!   none, becomes classic-BPF programs ([`SeccompFilters`]). They are plain data (serde), so the
//!   shim ships them to the guest process inside its JSON plan and the guest never parses a
//!   profile or resolves a syscall name.
//! - **Installing**, in the guest process, as the very last confinement step
//!   ([`SeccompFilters::install`]): everything before it (mounts, pivot_root, capability drops,
//!   `no_new_privs`) may need syscalls that the filter denies. The one exception is the
//!   caller's: without `no_new_privs` the kernel wants CAP_SYS_ADMIN, so the filter goes in
//!   before the capabilities are dropped and must allow what that step uses.
//!
//! # How a profile becomes one BPF program
//!
//! seccompiler builds filters with one action for listed syscalls and one for the rest, while a
//! profile mixes actions. The profile is therefore split by action into sub-programs, each built
//! by seccompiler:
//!
//! 1. one per action that is neither `SCMP_ACT_ALLOW` nor the default action: its syscalls (with
//!    their argument conditions) get that action, every other syscall gets "no verdict yet";
//!    these run in the kernel's precedence order (kill process > kill thread > trap > errno >
//!    trace > log), and actions of the same kind (two errno values) in profile order;
//! 2. last, the allow rules: listed syscalls are allowed, any other one gets the default action
//!    (when the default action is allow, this step is a bare "allow").
//!
//! The sub-programs are stitched into a single program: each "no verdict yet" return becomes a
//! jump to the next sub-program, so the first sub-program that matches decides. That is the
//! verdict the kernel would reach with one stacked filter per action (it runs them all and keeps
//! the highest-precedence result), but it installs with one `seccomp(2)` call, so a profile that
//! denies `seccomp` itself cannot block the rest of its own installation, and the kernel's
//! 4096-instruction limit applies to the whole profile.
//!
//! # A dispatch in front
//!
//! Most syscalls get a verdict that does not depend on their arguments: the action of the first
//! sub-program (in the order above) that lists them without conditions, or the default action
//! when none lists them. The program therefore starts with a binary search over the syscall
//! numbers that returns those verdicts directly (about ten instructions for any syscall, where
//! the stitched sub-programs compare one syscall number after another), and jumps into the
//! stitched sub-programs only for the syscalls whose verdict depends on their arguments; those
//! sub-programs are built from the rules of these syscalls alone. Besides every filtered
//! syscall, this is what makes installing cheap: the kernel runs the new filter for every
//! syscall number once, to cache which ones it always allows, and with a linear program that
//! took a guest a sizeable share of its start-up. The dispatch uses only the instructions
//! that cache understands (loads of the syscall number and architecture, comparisons with
//! constants, returns), so every syscall whose verdict is a constant "allow" gets cached.
//!
//! # Where this differs from runc + libseccomp
//!
//! - **Native architecture only.** `architectures` is ignored: a wasmtime guest never uses another
//!   ABI, and the program kills the process (`SECCOMP_RET_KILL_PROCESS`) for a syscall made
//!   through any other one (the i386 `int 0x80` ABI, AArch32 compat), where libseccomp would apply
//!   the profile to the listed ones. On x86_64 the same goes for every syscall number from
//!   `0x4000_0000` up: x32 calls share x86_64's audit arch, so seccompiler's check misses them
//!   and a deny-list filter would let them through (this also kills a bare `syscall(-1)`).
//! - **No `-ENOSYS` patch.** runc makes syscalls newer than any the profile names return
//!   `ENOSYS` so a libc falls back to an older one; here they get the default action.
//! - **Per-rule `errnoRet` defaults to `EPERM`**, as in runc and the spec; `defaultErrnoRet` only
//!   sets the default action's errno.
//! - Rejected rather than approximated: `SCMP_ACT_NOTIFY`, `listenerPath`,
//!   `SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV` (wasmcell runs no notification agent), an argument
//!   index above 5, an `errnoRet` on an action that returns none, and a profile over 4096
//!   instructions.
//!
//! Kept as in runc: names unknown to the architecture are skipped (profiles list 32-bit-only
//! syscalls such as `_llseek` or `chown32`), rules whose action is the default action are
//! redundant and dropped, `SCMP_ACT_KILL` means kill-thread, and when one entry compares the same
//! argument index more than once its comparisons are ORed (each one becomes its own rule) instead
//! of ANDed. `SECCOMP_FILTER_FLAG_LOG` and `SECCOMP_FILTER_FLAG_SPEC_ALLOW` are passed to the
//! kernel; `SECCOMP_FILTER_FLAG_TSYNC` is accepted and ignored, because the guest is
//! single-threaded when it installs the filter.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io;
use std::path::PathBuf;

use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompFilterFlag,
    LinuxSeccompOperator, LinuxSyscall,
};
use seccompiler::{
    BackendError, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
    SeccompFilter, SeccompRule, TargetArch,
};
use serde::{Deserialize, Serialize};
use syscalls::Sysno;

/// The kernel's limit on one classic-BPF program (`BPF_MAXINSNS`).
const MAX_INSTRUCTIONS: usize = 4096;

/// Highest errno the kernel passes through unchanged (`MAX_ERRNO`); larger values are clamped.
const MAX_ERRNO: u32 = 4095;

/// Syscall numbers with this bit set are x32 calls on x86_64: same audit arch, different table.
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: Option<u32> = Some(0x4000_0000);
#[cfg(not(target_arch = "x86_64"))]
const X32_SYSCALL_BIT: Option<u32> = None;

/// One classic-BPF instruction, laid out exactly as the kernel's `struct sock_filter` so that
/// [`SeccompFilters::install`] hands the kernel a pointer to the stored program without copying
/// (and therefore without allocating: it is safe to call between `fork` and `exec`).
/// Serialises as `[code, jt, jf, k]`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Insn(u16, u8, u8, u32);

const _: () = assert!(std::mem::size_of::<Insn>() == std::mem::size_of::<libc::sock_filter>());
const _: () = assert!(std::mem::align_of::<Insn>() == std::mem::align_of::<libc::sock_filter>());

const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
const JA: u16 = (libc::BPF_JMP | libc::BPF_JA) as u16;
const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
/// Offsets in the kernel's `struct seccomp_data`.
const SECCOMP_DATA_NR: u32 = 0;
const SECCOMP_DATA_ARCH: u32 = 4;

/// The `AUDIT_ARCH_*` value of this architecture's native syscalls.
#[cfg(target_arch = "x86_64")]
const NATIVE_AUDIT_ARCH: Option<u32> = Some(0xC000_003E);
#[cfg(target_arch = "aarch64")]
const NATIVE_AUDIT_ARCH: Option<u32> = Some(0xC000_00B7);
#[cfg(target_arch = "riscv64")]
const NATIVE_AUDIT_ARCH: Option<u32> = Some(0xC000_00F3);
#[cfg(not(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    target_arch = "riscv64"
)))]
const NATIVE_AUDIT_ARCH: Option<u32> = None;

/// Syscall numbers a dispatch leaf compares one after another before it returns the default.
const DISPATCH_LEAF: usize = 3;

impl Insn {
    fn ret(k: u32) -> Insn {
        Insn(RET_K, 0, 0, k)
    }

    fn is_ret_allow(self) -> bool {
        self.0 == RET_K && self.3 == libc::SECCOMP_RET_ALLOW
    }
}

impl From<seccompiler::sock_filter> for Insn {
    fn from(f: seccompiler::sock_filter) -> Insn {
        Insn(f.code, f.jt, f.jf, f.k)
    }
}

/// Compiled seccomp programs, ready to install.
///
/// Built in the shim by [`from_spec`](Self::from_spec) or [`default_filter`](Self::default_filter)
/// and shipped to the guest process in its JSON plan. Holds at most one program today (none when
/// the profile allows everything); [`install`](Self::install) loads every program in order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeccompFilters {
    programs: Vec<Vec<Insn>>,
    /// `SECCOMP_FILTER_FLAG_*` bits passed to `seccomp(2)`.
    flags: u32,
    /// Profile syscall names unknown to this architecture, for the shim's log: not shipped, and
    /// not part of equality.
    #[serde(skip)]
    skipped: Vec<String>,
}

/// Two filter sets are equal when they install the same thing.
impl PartialEq for SeccompFilters {
    fn eq(&self, other: &Self) -> bool {
        self.programs == other.programs && self.flags == other.flags
    }
}

impl Eq for SeccompFilters {}

/// Why a profile could not be compiled or a program not installed.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// `SCMP_ACT_NOTIFY` needs a user-notification listener.
    #[error(
        "seccomp {context}: SCMP_ACT_NOTIFY needs a seccomp user-notification listener, which wasmcell does not run"
    )]
    Notify {
        /// `defaultAction`, or the syscall entry that asked for it.
        context: String,
    },
    /// `listenerPath` names a seccomp agent.
    #[error(
        "seccomp listenerPath {path:?}: wasmcell does not support seccomp user-notification agents"
    )]
    ListenerPath {
        /// The path from the profile.
        path: PathBuf,
    },
    /// A filter flag wasmcell cannot honour.
    #[error("seccomp flag {flag} is not supported by wasmcell")]
    UnsupportedFlag {
        /// The flag as the profile spells it.
        flag: String,
    },
    /// An argument index past the sixth argument.
    #[error(
        "seccomp rule for {syscall}: argument index {index} does not exist (syscalls take at most 6 arguments, index 0 to 5)"
    )]
    ArgIndex {
        /// The syscall entry.
        syscall: String,
        /// The index from the profile.
        index: usize,
    },
    /// `errnoRet`/`defaultErrnoRet` on an action that returns no errno.
    #[error(
        "seccomp {context}: errnoRet {errno} given for {action}, which returns none (only SCMP_ACT_ERRNO and SCMP_ACT_TRACE do)"
    )]
    ErrnoRetWithoutErrno {
        /// `defaultAction` or the syscall entry.
        context: String,
        /// The action as the profile spells it.
        action: String,
        /// The value from the profile.
        errno: u32,
    },
    /// `errnoRet` too large for the action's return data.
    #[error("seccomp {context}: errnoRet {errno} is too large for {action} (at most {max})")]
    ErrnoRetRange {
        /// `defaultAction` or the syscall entry.
        context: String,
        /// The action as the profile spells it.
        action: String,
        /// The value from the profile.
        errno: u32,
        /// The largest value the action takes.
        max: u32,
    },
    /// The program is longer than the kernel accepts.
    #[error(
        "seccomp profile compiles to {instructions} BPF instructions, over the kernel's limit of {limit} (BPF_MAXINSNS)"
    )]
    TooLarge {
        /// Length of the program (or of the sub-program that already overflowed).
        instructions: usize,
        /// The kernel's limit.
        limit: usize,
    },
    /// seccompiler has no target for this architecture.
    #[error("seccomp filters cannot be built for architecture {arch}")]
    UnsupportedArch {
        /// `std::env::consts::ARCH`.
        arch: &'static str,
    },
    /// seccompiler refused a filter.
    #[error("seccomp: compiling {context}: {source}")]
    Compile {
        /// The action or entry being compiled.
        context: String,
        /// seccompiler's error.
        #[source]
        source: BackendError,
    },
    /// The kernel refused the filter with `EACCES`.
    #[error(
        "installing seccomp program {index} needs no_new_privs or CAP_SYS_ADMIN: the kernel said EACCES (set PR_SET_NO_NEW_PRIVS before installing)"
    )]
    NoNewPrivs {
        /// Position of the program in the set.
        index: usize,
    },
    /// The kernel refused the filter.
    #[error("installing seccomp program {index} ({instructions} instructions): {source}")]
    Install {
        /// Position of the program in the set.
        index: usize,
        /// Length of the program.
        instructions: usize,
        /// What `seccomp(2)` said.
        #[source]
        source: io::Error,
    },
}

/// Default-filter names denied with `EPERM`, whatever their arguments. See the table on
/// [`SeccompFilters::default_filter`].
const DEFAULT_DENY: &[&str] = &[
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "pidfd_getfd",
    "kcmp",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "move_mount",
    "open_tree",
    "open_tree_attr",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    "unshare",
    "setns",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "keyctl",
    "add_key",
    "request_key",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "quotactl",
    "quotactl_fd",
    "syslog",
    "iopl",
    "ioperm",
    "lookup_dcookie",
    "fanotify_init",
    "open_by_handle_at",
    "name_to_handle_at",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "vhangup",
    "nfsservctl",
    "uselib",
];

/// What [`SeccompFilters::no_new_sockets`] denies whatever the arguments.
const NO_NEW_SOCKETS: [&str; 7] = [
    "socket",
    "bind",
    "connect",
    "listen",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
];

/// The obsolete `SOCK_PACKET` socket type (libc deprecates the name, the kernel still takes it).
const SOCK_PACKET: u32 = 10;

/// `CLONE_NEWTIME | CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER |
/// CLONE_NEWPID | CLONE_NEWNET`.
const CLONE_NAMESPACE_FLAGS: u32 = 0x7E02_0080;

/// Where [`Plan::add`] files an entry: `None` matches the syscall whatever its arguments;
/// `Some(rules)` matches when any rule does.
type Matcher = Option<Vec<SeccompRule>>;

/// seccompiler's rule table: an empty vector means "whatever the arguments".
type Rules = BTreeMap<i64, Vec<SeccompRule>>;

/// A profile sorted by action, before it becomes BPF.
struct Plan {
    default: SeccompAction,
    /// Actions other than allow and the default, in first-seen order.
    groups: Vec<(SeccompAction, Rules)>,
    allow: Rules,
    flags: u32,
    skipped: Vec<String>,
}

impl Plan {
    fn new(default: SeccompAction, flags: u32) -> Plan {
        Plan {
            default,
            groups: Vec::new(),
            allow: Rules::new(),
            flags,
            skipped: Vec::new(),
        }
    }

    /// Files `name` under `action`. A name unknown to this architecture is remembered and
    /// otherwise ignored, as libseccomp does.
    fn add(&mut self, action: &SeccompAction, name: &str, matcher: &Matcher) {
        let Ok(sysno) = name.parse::<Sysno>() else {
            if !self.skipped.iter().any(|s| s == name) {
                self.skipped.push(name.to_owned());
            }
            return;
        };
        // A rule restating the default changes no verdict; dropping it also keeps an
        // unconditional allow of the same syscall from being shadowed, as in runc.
        if *action == self.default {
            return;
        }
        let table = if *action == SeccompAction::Allow {
            &mut self.allow
        } else if let Some(i) = self.groups.iter().position(|(a, _)| a == action) {
            &mut self.groups[i].1
        } else {
            self.groups.push((action.clone(), Rules::new()));
            let last = self.groups.len() - 1;
            &mut self.groups[last].1
        };
        let entry = table.entry(i64::from(sysno.id()));
        match matcher {
            None => {
                // Unconditional absorbs any conditional rules already there.
                entry.or_default().clear();
            }
            Some(rules) => {
                use std::collections::btree_map::Entry;
                match entry {
                    Entry::Vacant(v) => {
                        v.insert(rules.clone());
                    }
                    // An empty vector is already unconditional.
                    Entry::Occupied(mut o) if !o.get().is_empty() => {
                        o.get_mut().extend(rules.iter().cloned());
                    }
                    Entry::Occupied(_) => {}
                }
            }
        }
    }
}

impl SeccompFilters {
    /// Compiles the spec's `linux.seccomp` profile, or the [default filter](Self::default_filter)
    /// when `profile` is `None`. See the module doc for how closely this follows runc.
    ///
    /// Logs at debug what it built ([`describe`](Self::describe)) and the profile's syscall
    /// names that this architecture does not have (skipped, as libseccomp does).
    pub fn from_spec(profile: Option<&LinuxSeccomp>) -> Result<SeccompFilters, SeccompError> {
        let filters = match profile {
            Some(profile) => assemble(plan_profile(profile)?)?,
            None => {
                // An error at create beats the default filter's fail-closed fallback.
                target_arch()?;
                Self::default_filter()
            }
        };
        if !filters.skipped.is_empty() {
            log::debug!(
                "seccomp: syscall names unknown on {}, skipped: {}",
                std::env::consts::ARCH,
                filters.skipped.join(", ")
            );
        }
        log::debug!("seccomp: {}", filters.describe());
        Ok(filters)
    }

    /// wasmcell's default filter, used when the spec has no `linux.seccomp`.
    ///
    /// Default action: **allow**. It removes kernel surface a wasmtime guest never needs
    /// (wasmtime, wasmtime-wasi and a current-thread tokio runtime: threads, futexes, memory mapping,
    /// signals, epoll, timers, files on its preopens, TCP/UDP/UNIX sockets, clocks). Every denial
    /// returns `EPERM` except `clone3`:
    ///
    /// | syscalls | why |
    /// | --- | --- |
    /// | `ptrace`, `process_vm_readv`, `process_vm_writev`, `pidfd_getfd`, `kcmp` | reach into other processes' memory, registers and files |
    /// | `mount`, `umount2`, `pivot_root`, `chroot`, `move_mount`, `open_tree`, `open_tree_attr`, `fsopen`, `fsconfig`, `fsmount`, `fspick`, `mount_setattr` | reshape the filesystem the first wall set up |
    /// | `unshare`, `setns` | new or foreign namespaces: a user namespace hands back every capability inside it |
    /// | `clone` with any of `CLONE_NEWNS`, `NEWUTS`, `NEWIPC`, `NEWUSER`, `NEWPID`, `NEWNET`, `NEWCGROUP`, `NEWTIME` (mask `0x7E020080`) | the same through `clone`; plain threads and processes stay allowed (`NEWTIME` shares its bit with `clone`'s exit-signal byte, where it is an invalid signal anyway) |
    /// | `clone3` (returns **`ENOSYS`**) | its flags sit in a struct the filter cannot read; `ENOSYS` makes glibc fall back to `clone`, as Docker's profile does |
    /// | `bpf`, `perf_event_open`, `userfaultfd` | large attack surface, frequent in kernel exploits |
    /// | `io_uring_setup`, `io_uring_enter`, `io_uring_register` | wasmtime does not use io_uring; it bypasses syscall-level policy and has a long CVE record |
    /// | `keyctl`, `add_key`, `request_key` | the kernel keyring is not namespaced |
    /// | `kexec_load`, `kexec_file_load`, `init_module`, `finit_module`, `delete_module`, `reboot` | replace or extend the running kernel |
    /// | `swapon`, `swapoff`, `acct`, `quotactl`, `quotactl_fd`, `syslog`, `vhangup`, `nfsservctl`, `uselib`, `lookup_dcookie` | host administration and obsolete interfaces |
    /// | `iopl`, `ioperm` | raw I/O port access (x86 only) |
    /// | `fanotify_init` | filesystem-wide event monitoring |
    /// | `open_by_handle_at`, `name_to_handle_at` | open files by handle, around path-based confinement (the "shocker" escape) |
    /// | `settimeofday`, `clock_settime`, `clock_adjtime`, `adjtimex` | the clock is host-wide; reading it (`clock_gettime`, `gettimeofday`) stays allowed |
    /// | `personality` except `0` and the `0xffffffff` query | execution domains such as `ADDR_NO_RANDOMIZE` weaken the process |
    /// | `socket` with a domain other than `AF_UNIX`, `AF_INET`, `AF_INET6`, or with type `SOCK_RAW` or `SOCK_PACKET` | packet, netlink and raw sockets sniff, forge and reconfigure the network |
    /// | `socketpair` with a domain other than `AF_UNIX` | the same gate for pairs (only `AF_UNIX` has them anyway) |
    ///
    /// Integer arguments (`personality`, `socket`'s domain and type, `clone`'s flags) are
    /// compared on their low 32 bits, the part the kernel reads. Names this architecture lacks
    /// (`iopl` on aarch64) are skipped.
    ///
    /// Never fails on a supported architecture (x86_64, aarch64, riscv64: the unit tests compile
    /// it). Elsewhere it logs an error and returns a program that kills the process at its
    /// next syscall: the guest fails closed rather than running unconfined.
    /// [`from_spec(None)`](Self::from_spec) checks the architecture first and returns
    /// [`SeccompError::UnsupportedArch`] instead.
    ///
    /// Compiled once per process and cloned afterwards: a shim creates many guests with it.
    pub fn default_filter() -> SeccompFilters {
        static DEFAULT: std::sync::OnceLock<SeccompFilters> = std::sync::OnceLock::new();
        DEFAULT.get_or_init(compile_default_filter).clone()
    }

    /// The program a guest in the shared empty network namespace ([`crate::empty_network`])
    /// stacks on its filter; everything it does not name is left to the other programs:
    ///
    /// | syscalls | verdict | why |
    /// | --- | --- | --- |
    /// | `socket`, `bind`, `connect`, `listen` | `EPERM` | no socket of any family, and no name or peer for one: no netlink request can reconfigure the namespace, no guest can reach another through an abstract UNIX socket or the loopback |
    /// | `socketpair` unless `AF_UNIX` and `SOCK_STREAM` | `EPERM` | a connected stream pair reaches only its own other end (tokio's signal driver makes one); a datagram pair could be pointed at a name |
    /// | `io_uring_setup`, `io_uring_enter`, `io_uring_register` | `EPERM` | io_uring opens, binds and connects sockets past a filter that sees only syscalls |
    ///
    /// Like every program compiled here it kills a syscall made through another ABI. Compiled
    /// once per process (a starter compiles it before it forks, so guests clone it); fails
    /// closed like [`default_filter`](Self::default_filter).
    pub fn no_new_sockets() -> SeccompFilters {
        static NO_SOCKETS: std::sync::OnceLock<SeccompFilters> = std::sync::OnceLock::new();
        NO_SOCKETS
            .get_or_init(|| {
                no_new_sockets_plan()
                    .and_then(assemble)
                    .unwrap_or_else(|e| {
                        log::error!(
                            "seccomp: socket filter unavailable ({e}); the guest will be killed"
                        );
                        SeccompFilters::kill_at_next_syscall()
                    })
            })
            .clone()
    }

    /// Appends `other`'s programs, installed after these with these flags.
    pub fn stack(&mut self, other: SeccompFilters) {
        self.programs.extend(other.programs);
    }

    /// Installs every program, in order, on the calling thread, with `seccomp(2)`
    /// (`SECCOMP_SET_MODE_FILTER`, no `TSYNC`: the guest is single-threaded when it runs this).
    ///
    /// The caller must have set `no_new_privs` or hold `CAP_SYS_ADMIN`. Allocates nothing.
    pub fn install(&self) -> Result<(), SeccompError> {
        for (index, program) in self.programs.iter().enumerate() {
            let instructions = program.len();
            let len = u16::try_from(instructions).map_err(|_| SeccompError::TooLarge {
                instructions,
                limit: MAX_INSTRUCTIONS,
            })?;
            let fprog = libc::sock_fprog {
                len,
                filter: program.as_ptr().cast::<libc::sock_filter>().cast_mut(),
            };
            // SAFETY: `Insn` is `repr(C)` with the size and alignment of `sock_filter` (asserted
            // at compile time) and the same field order, so `program` is a valid array of `len`
            // `sock_filter`s that outlives the call; the kernel only reads it (copies it in) and
            // validates the program itself.
            #[allow(unsafe_code)]
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_seccomp,
                    libc::SECCOMP_SET_MODE_FILTER,
                    libc::c_ulong::from(self.flags),
                    &raw const fprog,
                )
            };
            if rc != 0 {
                let source = io::Error::last_os_error();
                if source.raw_os_error() == Some(libc::EACCES) {
                    return Err(SeccompError::NoNewPrivs { index });
                }
                return Err(SeccompError::Install {
                    index,
                    instructions,
                    source,
                });
            }
        }
        Ok(())
    }

    /// One line for the shim's debug log: programs, instructions, flags, skipped names.
    pub fn describe(&self) -> String {
        let instructions: usize = self.programs.iter().map(Vec::len).sum();
        let mut line = format!(
            "{} seccomp program(s), {instructions} BPF instructions, flags {:#x}",
            self.programs.len(),
            self.flags
        );
        if !self.skipped.is_empty() {
            let _ = write!(
                line,
                "; {} syscall name(s) unknown on {} skipped",
                self.skipped.len(),
                std::env::consts::ARCH
            );
        }
        line
    }
}

fn target_arch() -> Result<TargetArch, SeccompError> {
    let arch = std::env::consts::ARCH;
    TargetArch::try_from(arch).map_err(|_| SeccompError::UnsupportedArch { arch })
}

/// Evaluation order of actions: the kernel's precedence, highest first.
fn precedence(action: &SeccompAction) -> u8 {
    match action {
        SeccompAction::KillProcess => 0,
        SeccompAction::KillThread => 1,
        SeccompAction::Trap => 2,
        SeccompAction::Errno(_) => 3,
        SeccompAction::Trace(_) => 4,
        SeccompAction::Log => 5,
        SeccompAction::Allow => 6,
    }
}

/// Builds [`SeccompFilters::default_filter`], or its kill-at-next-syscall fallback.
fn compile_default_filter() -> SeccompFilters {
    match default_plan().and_then(assemble) {
        Ok(filters) => filters,
        Err(e) => {
            log::error!("seccomp: default filter unavailable ({e}); the guest will be killed");
            SeccompFilters::kill_at_next_syscall()
        }
    }
}

impl SeccompFilters {
    /// The fail-closed fallback: a program that kills the process at its next syscall.
    fn kill_at_next_syscall() -> SeccompFilters {
        SeccompFilters {
            programs: vec![vec![Insn::ret(libc::SECCOMP_RET_KILL_PROCESS)]],
            flags: 0,
            skipped: Vec::new(),
        }
    }
}

fn compile(
    rules: Rules,
    mismatch: SeccompAction,
    matched: SeccompAction,
    arch: TargetArch,
) -> Result<Vec<Insn>, SeccompError> {
    let context = if matched == SeccompAction::Allow {
        format!("the allow rules (default {mismatch:?})")
    } else {
        format!("the {matched:?} rules")
    };
    let filter = SeccompFilter::new(rules, mismatch, matched, arch).map_err(|source| {
        SeccompError::Compile {
            context: context.clone(),
            source,
        }
    })?;
    let program = BpfProgram::try_from(filter).map_err(|source| match source {
        BackendError::FilterTooLarge(instructions) => SeccompError::TooLarge {
            instructions,
            limit: MAX_INSTRUCTIONS,
        },
        source => SeccompError::Compile { context, source },
    })?;
    Ok(program.into_iter().map(Insn::from).collect())
}

/// Builds the plan's one program: the dispatch, then the stitched sub-programs for the
/// syscalls it cannot decide alone (see the module doc).
fn assemble(plan: Plan) -> Result<SeccompFilters, SeccompError> {
    let Plan {
        default,
        mut groups,
        allow,
        flags,
        skipped,
    } = plan;
    if groups.is_empty() && default == SeccompAction::Allow {
        return Ok(SeccompFilters {
            programs: Vec::new(),
            flags,
            skipped,
        });
    }
    let arch = target_arch()?;
    // Stable: actions of one kind keep their profile order.
    groups.sort_by_key(|(action, _)| precedence(action));

    let program = match NATIVE_AUDIT_ARCH {
        Some(native) => {
            let verdicts = constant_verdicts(&groups, &allow, &default);
            let conditional: BTreeSet<i64> = verdicts
                .iter()
                .filter(|(_, verdict)| verdict.is_none())
                .map(|(nr, _)| i64::from(*nr))
                .collect();
            let only_conditional = |rules: Rules| -> Rules {
                rules
                    .into_iter()
                    .filter(|(nr, _)| conditional.contains(nr))
                    .collect()
            };
            let groups: Vec<_> = groups
                .into_iter()
                .map(|(action, rules)| (action, only_conditional(rules)))
                .filter(|(_, rules)| !rules.is_empty())
                .collect();
            let allow = only_conditional(allow);
            let mut program = dispatch(native, &verdicts, u32::from(default.clone()));
            if !conditional.is_empty() {
                program.extend(stitch(groups, allow, default, arch)?);
            }
            program
        }
        None => stitch(groups, allow, default, arch)?,
    };
    if program.len() > MAX_INSTRUCTIONS {
        return Err(SeccompError::TooLarge {
            instructions: program.len(),
            limit: MAX_INSTRUCTIONS,
        });
    }
    Ok(SeccompFilters {
        programs: vec![program],
        flags,
        skipped,
    })
}

/// The verdict of every syscall a rule names, in syscall-number order: `Some(return value)`
/// when it does not depend on the arguments, `None` when the stitched sub-programs must decide.
/// Syscalls whose verdict is the default action are left out (the dispatch's fall-through).
fn constant_verdicts(
    groups: &[(SeccompAction, Rules)],
    allow: &Rules,
    default: &SeccompAction,
) -> Vec<(u32, Option<u32>)> {
    let default_ret = u32::from(default.clone());
    let named: BTreeSet<i64> = groups
        .iter()
        .flat_map(|(_, rules)| rules.keys())
        .chain(allow.keys())
        .copied()
        .collect();
    named
        .into_iter()
        .filter_map(|nr| {
            // The first sub-program that names the syscall decides it, or passes it on when
            // its conditions fail: then only the program knows.
            let verdict = match groups
                .iter()
                .find_map(|(action, rules)| rules.get(&nr).map(|r| (action, r.is_empty())))
            {
                Some((action, true)) => Some(u32::from(action.clone())),
                Some((_, false)) => None,
                None => match allow.get(&nr) {
                    Some(rules) if rules.is_empty() => Some(libc::SECCOMP_RET_ALLOW),
                    Some(_) => None,
                    None => Some(default_ret),
                },
            };
            // Syscall numbers are small and positive (Sysno ids).
            let nr = u32::try_from(nr).ok()?;
            (verdict != Some(default_ret)).then_some((nr, verdict))
        })
        .collect()
}

/// The dispatch: kill a syscall made through another ABI (as the stitched program's own checks
/// do), then a binary search over `verdicts` (sorted by number) that returns constant verdicts,
/// jumps to the instruction after the dispatch for `None`, and returns `default_ret` for every
/// syscall not listed.
fn dispatch(native_arch: u32, verdicts: &[(u32, Option<u32>)], default_ret: u32) -> Vec<Insn> {
    let kill = Insn::ret(libc::SECCOMP_RET_KILL_PROCESS);
    let mut program = vec![
        Insn(LD_W_ABS, 0, 0, SECCOMP_DATA_ARCH),
        Insn(JEQ_K, 1, 0, native_arch),
        kill,
        Insn(LD_W_ABS, 0, 0, SECCOMP_DATA_NR),
    ];
    if let Some(bit) = X32_SYSCALL_BIT {
        program.extend([Insn(JGE_K, 0, 1, bit), kill]);
    }
    let mut to_program = Vec::new();
    search(verdicts, default_ret, &mut program, &mut to_program);
    let end = program.len();
    for at in to_program {
        // Forward jumps only, and `end` is past every instruction emitted.
        program[at].3 = (end - at - 1) as u32;
    }
    program
}

/// One node of the dispatch's binary search; records in `to_program` the jumps whose target,
/// the stitched program, is not yet placed.
fn search(
    verdicts: &[(u32, Option<u32>)],
    default_ret: u32,
    program: &mut Vec<Insn>,
    to_program: &mut Vec<usize>,
) {
    if verdicts.len() <= DISPATCH_LEAF {
        // `jeq nr` for each, the default, then each one's verdict: every jeq's true branch
        // lands on its own verdict, the same distance away.
        let n = verdicts.len();
        for (nr, _) in verdicts {
            program.push(Insn(JEQ_K, n as u8, 0, *nr));
        }
        program.push(Insn::ret(default_ret));
        for (_, verdict) in verdicts {
            match verdict {
                Some(ret) => program.push(Insn::ret(*ret)),
                None => {
                    to_program.push(program.len());
                    program.push(Insn(JA, 0, 0, 0));
                }
            }
        }
        return;
    }
    // Numbers from the pivot up fall through to the upper half; the rest jump past it (with a
    // `ja`: a conditional jump reaches only 255 instructions).
    let (lower, upper) = verdicts.split_at(verdicts.len() / 2);
    program.push(Insn(JGE_K, 1, 0, upper[0].0));
    let over_upper = program.len();
    program.push(Insn(JA, 0, 0, 0));
    search(upper, default_ret, program, to_program);
    program[over_upper].3 = (program.len() - over_upper - 1) as u32;
    search(lower, default_ret, program, to_program);
}

/// Stitches sub-programs into one program (see the module doc): the x32 check, one per
/// action in precedence order, then the allow rules with the default action.
fn stitch(
    groups: Vec<(SeccompAction, Rules)>,
    allow: Rules,
    default: SeccompAction,
    arch: TargetArch,
) -> Result<Vec<Insn>, SeccompError> {
    let mut program = Vec::new();
    if let Some(bit) = X32_SYSCALL_BIT {
        program.extend([
            Insn(LD_W_ABS, 0, 0, SECCOMP_DATA_NR),
            Insn(JGE_K, 0, 1, bit),
            Insn::ret(libc::SECCOMP_RET_KILL_PROCESS),
        ]);
    }
    for (action, rules) in groups {
        let body = compile(rules, SeccompAction::Allow, action, arch)?;
        let len = body.len();
        // "Allow" from a per-action sub-program only means "not mine": go on to the next one,
        // the first instruction after this sub-program.
        program.extend(body.into_iter().enumerate().map(|(i, insn)| {
            if insn.is_ret_allow() {
                // Fits: `len` is below MAX_INSTRUCTIONS, seccompiler checked it.
                Insn(JA, 0, 0, (len - 1 - i) as u32)
            } else {
                insn
            }
        }));
    }
    if default == SeccompAction::Allow {
        program.push(Insn::ret(libc::SECCOMP_RET_ALLOW));
    } else {
        program.extend(compile(allow, default, SeccompAction::Allow, arch)?);
    }
    Ok(program)
}

fn default_plan() -> Result<Plan, SeccompError> {
    let eperm = SeccompAction::Errno(libc::EPERM as u32);
    let mut plan = Plan::new(SeccompAction::Allow, 0);
    for name in DEFAULT_DENY {
        plan.add(&eperm, name, &None);
    }

    let low = |index: u8, op: SeccompCmpOp, value: u32| {
        condition(
            "default filter",
            index,
            SeccompCmpArgLen::Dword,
            op,
            value.into(),
        )
    };
    let rule = |conditions: Vec<SeccompCondition>| new_rule("default filter", conditions);

    // "Any namespace bit set" is an OR: one rule per bit.
    let mut clone = Vec::new();
    for bit in (0..32)
        .map(|b| 1u32 << b)
        .filter(|b| CLONE_NAMESPACE_FLAGS & b != 0)
    {
        clone.push(rule(vec![low(
            0,
            SeccompCmpOp::MaskedEq(bit.into()),
            bit,
        )?])?);
    }
    plan.add(&eperm, "clone", &Some(clone));

    let (unix, inet, inet6) = (
        libc::AF_UNIX as u32,
        libc::AF_INET as u32,
        libc::AF_INET6 as u32,
    );
    // SOCK_TYPE_MASK: the type without SOCK_NONBLOCK / SOCK_CLOEXEC.
    let sock_type = SeccompCmpOp::MaskedEq(0xf);
    let socket = vec![
        rule(vec![
            low(0, SeccompCmpOp::Ne, unix)?,
            low(0, SeccompCmpOp::Ne, inet)?,
            low(0, SeccompCmpOp::Ne, inet6)?,
        ])?,
        rule(vec![low(1, sock_type.clone(), libc::SOCK_RAW as u32)?])?,
        rule(vec![low(1, sock_type, SOCK_PACKET)?])?,
    ];
    plan.add(&eperm, "socket", &Some(socket));
    plan.add(
        &eperm,
        "socketpair",
        &Some(vec![rule(vec![low(0, SeccompCmpOp::Ne, unix)?])?]),
    );
    plan.add(
        &eperm,
        "personality",
        &Some(vec![rule(vec![
            low(0, SeccompCmpOp::Ne, 0)?,
            low(0, SeccompCmpOp::Ne, 0xffff_ffff)?,
        ])?]),
    );

    plan.add(&SeccompAction::Errno(libc::ENOSYS as u32), "clone3", &None);
    Ok(plan)
}

fn no_new_sockets_plan() -> Result<Plan, SeccompError> {
    let label = "socket filter";
    let eperm = SeccompAction::Errno(libc::EPERM as u32);
    let mut plan = Plan::new(SeccompAction::Allow, 0);
    for name in NO_NEW_SOCKETS {
        plan.add(&eperm, name, &None);
    }
    let low = |index: u8, op: SeccompCmpOp, value: u32| {
        condition(label, index, SeccompCmpArgLen::Dword, op, value.into())
    };
    let pair = vec![
        new_rule(label, vec![low(0, SeccompCmpOp::Ne, libc::AF_UNIX as u32)?])?,
        new_rule(
            label,
            vec![low(
                1,
                SeccompCmpOp::MaskedEq(0xf),
                libc::SOCK_DGRAM as u32,
            )?],
        )?,
        new_rule(
            label,
            vec![low(
                1,
                SeccompCmpOp::MaskedEq(0xf),
                libc::SOCK_SEQPACKET as u32,
            )?],
        )?,
    ];
    plan.add(&eperm, "socketpair", &Some(pair));
    Ok(plan)
}

fn plan_profile(profile: &LinuxSeccomp) -> Result<Plan, SeccompError> {
    if let Some(path) = profile.listener_path() {
        return Err(SeccompError::ListenerPath { path: path.clone() });
    }
    let mut flags = 0u32;
    for flag in profile.flags().iter().flatten() {
        match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => {
                flags |= libc::SECCOMP_FILTER_FLAG_LOG as u32;
            }
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => {
                flags |= libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW as u32;
            }
            // The guest has one thread when it installs: there is nothing to synchronise.
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => {}
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => {
                return Err(SeccompError::UnsupportedFlag {
                    flag: flag.to_string(),
                });
            }
        }
    }
    let default = oci_action(
        profile.default_action(),
        profile.default_errno_ret(),
        "defaultAction",
    )?;
    let mut plan = Plan::new(default, flags);
    for entry in profile.syscalls().iter().flatten() {
        let label = entry_label(entry);
        let action = oci_action(entry.action(), entry.errno_ret(), &label)?;
        let matcher = oci_matcher(entry, &label)?;
        // Conditions that can never hold: the entry matches nothing.
        if matcher.as_ref().is_some_and(Vec::is_empty) {
            continue;
        }
        for name in entry.names() {
            plan.add(&action, name, &matcher);
        }
    }
    Ok(plan)
}

/// Names an entry in error messages without printing a 300-name allow list.
fn entry_label(entry: &LinuxSyscall) -> String {
    let names = entry.names();
    let mut label = format!(
        "syscalls [{}",
        names.iter().take(3).cloned().collect::<Vec<_>>().join(", ")
    );
    if names.len() > 3 {
        let _ = write!(label, ", … {} more", names.len() - 3);
    }
    label.push(']');
    label
}

/// `errno_ret` defaults to `EPERM`, as in runc and the runtime spec.
fn oci_action(
    action: LinuxSeccompAction,
    errno_ret: Option<u32>,
    context: &str,
) -> Result<SeccompAction, SeccompError> {
    use LinuxSeccompAction as A;
    let data = |max: u32| match errno_ret {
        None => Ok(libc::EPERM as u32),
        Some(errno) if errno <= max => Ok(errno),
        Some(errno) => Err(SeccompError::ErrnoRetRange {
            context: context.to_owned(),
            action: action.to_string(),
            errno,
            max,
        }),
    };
    let plain = |seccomp: SeccompAction| match errno_ret {
        None => Ok(seccomp),
        Some(errno) => Err(SeccompError::ErrnoRetWithoutErrno {
            context: context.to_owned(),
            action: action.to_string(),
            errno,
        }),
    };
    match action {
        // libseccomp's SCMP_ACT_KILL is the thread-killing one.
        A::ScmpActKill | A::ScmpActKillThread => plain(SeccompAction::KillThread),
        A::ScmpActKillProcess => plain(SeccompAction::KillProcess),
        A::ScmpActTrap => plain(SeccompAction::Trap),
        A::ScmpActLog => plain(SeccompAction::Log),
        A::ScmpActAllow => plain(SeccompAction::Allow),
        A::ScmpActErrno => Ok(SeccompAction::Errno(data(MAX_ERRNO)?)),
        A::ScmpActTrace => Ok(SeccompAction::Trace(data(libc::SECCOMP_RET_DATA)?)),
        A::ScmpActNotify => Err(SeccompError::Notify {
            context: context.to_owned(),
        }),
    }
}

/// The entry's `args` as seccompiler rules: `None` without args; `Some(empty)` when they can
/// never hold.
fn oci_matcher(entry: &LinuxSyscall, label: &str) -> Result<Matcher, SeccompError> {
    let args = match entry.args() {
        Some(args) if !args.is_empty() => args,
        _ => return Ok(None),
    };
    let mut seen = [false; 6];
    let mut repeated = false;
    let mut conditions = Vec::with_capacity(args.len());
    for arg in args {
        let index = u8::try_from(arg.index())
            .ok()
            .filter(|i| *i <= 5)
            .ok_or_else(|| SeccompError::ArgIndex {
                syscall: label.to_owned(),
                index: arg.index(),
            })?;
        repeated |= std::mem::replace(&mut seen[usize::from(index)], true);
        conditions.push(oci_condition(arg, index, label)?);
    }
    let rules = if repeated {
        // runc's rule for comparisons that share an argument: each is its own rule (OR).
        conditions
            .into_iter()
            .flatten()
            .map(|c| new_rule(label, vec![c]))
            .collect::<Result<_, _>>()?
    } else {
        match conditions.into_iter().collect::<Option<Vec<_>>>() {
            Some(all) => vec![new_rule(label, all)?],
            None => Vec::new(),
        }
    };
    Ok(Some(rules))
}

/// One OCI comparison, on all 64 bits as libseccomp does on 64-bit architectures; `None` when it
/// can never hold.
fn oci_condition(
    arg: &LinuxSeccompArg,
    index: u8,
    label: &str,
) -> Result<Option<SeccompCondition>, SeccompError> {
    use LinuxSeccompOperator as O;
    let (op, value) = match arg.op() {
        O::ScmpCmpNe => (SeccompCmpOp::Ne, arg.value()),
        O::ScmpCmpLt => (SeccompCmpOp::Lt, arg.value()),
        O::ScmpCmpLe => (SeccompCmpOp::Le, arg.value()),
        O::ScmpCmpEq => (SeccompCmpOp::Eq, arg.value()),
        O::ScmpCmpGe => (SeccompCmpOp::Ge, arg.value()),
        O::ScmpCmpGt => (SeccompCmpOp::Gt, arg.value()),
        O::ScmpCmpMaskedEq => {
            // OCI: (arg & value) == valueTwo. seccompiler masks its operand too, so a valueTwo
            // with bits outside the mask would silently turn into a satisfiable test.
            let (mask, want) = (arg.value(), arg.value_two().unwrap_or(0));
            if want & !mask != 0 {
                return Ok(None);
            }
            (SeccompCmpOp::MaskedEq(mask), want)
        }
    };
    condition(label, index, SeccompCmpArgLen::Qword, op, value).map(Some)
}

fn condition(
    label: &str,
    index: u8,
    len: SeccompCmpArgLen,
    op: SeccompCmpOp,
    value: u64,
) -> Result<SeccompCondition, SeccompError> {
    SeccompCondition::new(index, len, op, value).map_err(|source| match source {
        BackendError::InvalidArgumentNumber => SeccompError::ArgIndex {
            syscall: label.to_owned(),
            index: usize::from(index),
        },
        source => SeccompError::Compile {
            context: label.to_owned(),
            source,
        },
    })
}

fn new_rule(label: &str, conditions: Vec<SeccompCondition>) -> Result<SeccompRule, SeccompError> {
    SeccompRule::new(conditions).map_err(|source| SeccompError::Compile {
        context: label.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read as _, Write as _};

    const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
    const KILL_PROCESS: u32 = libc::SECCOMP_RET_KILL_PROCESS;
    const KILL_THREAD: u32 = libc::SECCOMP_RET_KILL_THREAD;
    const TRAP: u32 = libc::SECCOMP_RET_TRAP;
    const LOG: u32 = libc::SECCOMP_RET_LOG;

    fn errno(e: i32) -> u32 {
        libc::SECCOMP_RET_ERRNO | e as u32
    }

    #[cfg(target_arch = "x86_64")]
    const NATIVE_AUDIT_ARCH: u32 = 0xC000_003E;
    #[cfg(target_arch = "aarch64")]
    const NATIVE_AUDIT_ARCH: u32 = 0xC000_00B7;
    #[cfg(target_arch = "riscv64")]
    const NATIVE_AUDIT_ARCH: u32 = 0xC000_00F3;
    /// AUDIT_ARCH_I386: foreign on every supported architecture.
    const I386_AUDIT_ARCH: u32 = 0x4000_0003;

    /// Runs `program` on a synthetic `struct seccomp_data`, for the opcodes seccompiler and
    /// `assemble` emit; checks verdicts without installing anything.
    fn run_bpf(program: &[Insn], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_ne_bytes());
        data[4..8].copy_from_slice(&arch.to_ne_bytes());
        for (i, arg) in args.iter().enumerate() {
            data[16 + 8 * i..24 + 8 * i].copy_from_slice(&arg.to_ne_bytes());
        }
        let (mut a, mut pc) = (0u32, 0usize);
        loop {
            let Insn(code, jt, jf, k) = program[pc];
            pc += 1;
            let jump = |cond: bool| usize::from(if cond { jt } else { jf });
            match code {
                0x20 => {
                    let at = k as usize;
                    a = u32::from_ne_bytes(
                        data[at..at + 4]
                            .try_into()
                            .unwrap_or_else(|e| panic!("{e}")),
                    );
                }
                0x54 => a &= k,
                0x05 => pc += k as usize,
                0x15 => pc += jump(a == k),
                0x25 => pc += jump(a > k),
                0x35 => pc += jump(a >= k),
                0x06 => return k,
                other => panic!("unexpected BPF opcode {other:#x} at {}", pc - 1),
            }
        }
    }

    fn verdict(filters: &SeccompFilters, name: &str, args: [u64; 6]) -> u32 {
        assert_eq!(filters.programs.len(), 1, "{}", filters.describe());
        let nr = name
            .parse::<Sysno>()
            .unwrap_or_else(|()| panic!("unknown syscall {name}"))
            .id() as u32;
        run_bpf(&filters.programs[0], NATIVE_AUDIT_ARCH, nr, args)
    }

    fn args(a0: u64, a1: u64) -> [u64; 6] {
        [a0, a1, 0, 0, 0, 0]
    }

    fn profile(value: serde_json::Value) -> LinuxSeccomp {
        serde_json::from_value(value).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Written for these tests in the shape of containerd's RuntimeDefault profile (the one
    /// `ctr run --seccomp` and CRI load) for an x86_64 container without CAP_SYS_ADMIN:
    /// abridged, but with its 32-bit-only names, conditional entries and clone3 → ENOSYS.
    const CONTAINERD_ALLOW: &[&str] = &[
        "accept",
        "accept4",
        "access",
        "adjtimex",
        "alarm",
        "bind",
        "brk",
        "cachestat",
        "capget",
        "capset",
        "chdir",
        "chmod",
        "chown",
        "chown32",
        "clock_adjtime",
        "clock_adjtime64",
        "clock_getres",
        "clock_getres_time64",
        "clock_gettime",
        "clock_gettime64",
        "clock_nanosleep",
        "clock_nanosleep_time64",
        "close",
        "close_range",
        "connect",
        "copy_file_range",
        "creat",
        "dup",
        "dup2",
        "dup3",
        "epoll_create",
        "epoll_create1",
        "epoll_ctl",
        "epoll_ctl_old",
        "epoll_pwait",
        "epoll_pwait2",
        "epoll_wait",
        "epoll_wait_old",
        "eventfd",
        "eventfd2",
        "execve",
        "execveat",
        "exit",
        "exit_group",
        "faccessat",
        "faccessat2",
        "fadvise64",
        "fadvise64_64",
        "fallocate",
        "fanotify_mark",
        "fchdir",
        "fchmod",
        "fchmodat",
        "fchmodat2",
        "fchown",
        "fchown32",
        "fchownat",
        "fcntl",
        "fcntl64",
        "fdatasync",
        "fgetxattr",
        "flistxattr",
        "flock",
        "fork",
        "fremovexattr",
        "fsetxattr",
        "fstat",
        "fstat64",
        "fstatat64",
        "fstatfs",
        "fstatfs64",
        "fsync",
        "ftruncate",
        "ftruncate64",
        "futex",
        "futex_requeue",
        "futex_time64",
        "futex_wait",
        "futex_waitv",
        "futex_wake",
        "futimesat",
        "getcpu",
        "getcwd",
        "getdents",
        "getdents64",
        "getegid",
        "getegid32",
        "geteuid",
        "geteuid32",
        "getgid",
        "getgid32",
        "getgroups",
        "getgroups32",
        "getitimer",
        "getpeername",
        "getpgid",
        "getpgrp",
        "getpid",
        "getppid",
        "getpriority",
        "getrandom",
        "getresgid",
        "getresgid32",
        "getresuid",
        "getresuid32",
        "getrlimit",
        "get_robust_list",
        "getrusage",
        "getsid",
        "getsockname",
        "getsockopt",
        "get_thread_area",
        "gettid",
        "gettimeofday",
        "getuid",
        "getuid32",
        "getxattr",
        "inotify_add_watch",
        "inotify_init",
        "inotify_init1",
        "inotify_rm_watch",
        "io_cancel",
        "ioctl",
        "io_destroy",
        "io_getevents",
        "io_pgetevents",
        "io_pgetevents_time64",
        "ioprio_get",
        "ioprio_set",
        "io_setup",
        "io_submit",
        "ipc",
        "kill",
        "landlock_add_rule",
        "landlock_create_ruleset",
        "landlock_restrict_self",
        "lchown",
        "lchown32",
        "lgetxattr",
        "link",
        "linkat",
        "listen",
        "listxattr",
        "llistxattr",
        "_llseek",
        "lremovexattr",
        "lseek",
        "lsetxattr",
        "lstat",
        "lstat64",
        "madvise",
        "map_shadow_stack",
        "membarrier",
        "memfd_create",
        "memfd_secret",
        "mincore",
        "mkdir",
        "mkdirat",
        "mknod",
        "mknodat",
        "mlock",
        "mlock2",
        "mlockall",
        "mmap",
        "mmap2",
        "mprotect",
        "mq_getsetattr",
        "mq_notify",
        "mq_open",
        "mq_timedreceive",
        "mq_timedreceive_time64",
        "mq_timedsend",
        "mq_timedsend_time64",
        "mq_unlink",
        "mremap",
        "msgctl",
        "msgget",
        "msgrcv",
        "msgsnd",
        "msync",
        "munlock",
        "munlockall",
        "munmap",
        "nanosleep",
        "newfstatat",
        "_newselect",
        "open",
        "openat",
        "openat2",
        "pause",
        "pidfd_open",
        "pidfd_send_signal",
        "pipe",
        "pipe2",
        "pkey_alloc",
        "pkey_free",
        "pkey_mprotect",
        "poll",
        "ppoll",
        "ppoll_time64",
        "prctl",
        "pread64",
        "preadv",
        "preadv2",
        "prlimit64",
        "process_mrelease",
        "pselect6",
        "pselect6_time64",
        "pwrite64",
        "pwritev",
        "pwritev2",
        "read",
        "readahead",
        "readlink",
        "readlinkat",
        "readv",
        "recv",
        "recvfrom",
        "recvmmsg",
        "recvmmsg_time64",
        "recvmsg",
        "remap_file_pages",
        "removexattr",
        "rename",
        "renameat",
        "renameat2",
        "restart_syscall",
        "rmdir",
        "rseq",
        "rt_sigaction",
        "rt_sigpending",
        "rt_sigprocmask",
        "rt_sigqueueinfo",
        "rt_sigreturn",
        "rt_sigsuspend",
        "rt_sigtimedwait",
        "rt_sigtimedwait_time64",
        "rt_tgsigqueueinfo",
        "sched_getaffinity",
        "sched_getattr",
        "sched_getparam",
        "sched_get_priority_max",
        "sched_get_priority_min",
        "sched_getscheduler",
        "sched_rr_get_interval",
        "sched_rr_get_interval_time64",
        "sched_setaffinity",
        "sched_setattr",
        "sched_setparam",
        "sched_setscheduler",
        "sched_yield",
        "seccomp",
        "select",
        "semctl",
        "semget",
        "semop",
        "semtimedop",
        "semtimedop_time64",
        "send",
        "sendfile",
        "sendfile64",
        "sendmmsg",
        "sendmsg",
        "sendto",
        "setfsgid",
        "setfsgid32",
        "setfsuid",
        "setfsuid32",
        "setgid",
        "setgid32",
        "setgroups",
        "setgroups32",
        "setitimer",
        "setpgid",
        "setpriority",
        "setregid",
        "setregid32",
        "setresgid",
        "setresgid32",
        "setresuid",
        "setresuid32",
        "setreuid",
        "setreuid32",
        "setrlimit",
        "set_robust_list",
        "setsid",
        "setsockopt",
        "set_thread_area",
        "set_tid_address",
        "setuid",
        "setuid32",
        "setxattr",
        "shmat",
        "shmctl",
        "shmdt",
        "shmget",
        "shutdown",
        "sigaltstack",
        "signalfd",
        "signalfd4",
        "sigprocmask",
        "sigreturn",
        "socketcall",
        "socketpair",
        "splice",
        "stat",
        "stat64",
        "statfs",
        "statfs64",
        "statx",
        "symlink",
        "symlinkat",
        "sync",
        "sync_file_range",
        "syncfs",
        "sysinfo",
        "tee",
        "tgkill",
        "time",
        "timer_create",
        "timer_delete",
        "timer_getoverrun",
        "timer_gettime",
        "timer_gettime64",
        "timer_settime",
        "timer_settime64",
        "timerfd_create",
        "timerfd_gettime",
        "timerfd_gettime64",
        "timerfd_settime",
        "timerfd_settime64",
        "times",
        "tkill",
        "truncate",
        "truncate64",
        "ugetrlimit",
        "umask",
        "uname",
        "unlink",
        "unlinkat",
        "utime",
        "utimensat",
        "utimensat_time64",
        "utimes",
        "vfork",
        "vmsplice",
        "wait4",
        "waitid",
        "waitpid",
        "write",
        "writev",
        "arch_prctl",
        "modify_ldt",
    ];

    fn containerd_profile() -> LinuxSeccomp {
        let mut syscalls = vec![serde_json::json!({
            "names": CONTAINERD_ALLOW, "action": "SCMP_ACT_ALLOW"
        })];
        for persona in [0x0u64, 0x0008, 0x20000, 0x20008, 0xffff_ffff] {
            syscalls.push(serde_json::json!({
                "names": ["personality"], "action": "SCMP_ACT_ALLOW",
                "args": [{"index": 0, "value": persona, "op": "SCMP_CMP_EQ"}]
            }));
        }
        syscalls.extend([
            // AF_VSOCK stays closed.
            serde_json::json!({
                "names": ["socket"], "action": "SCMP_ACT_ALLOW",
                "args": [{"index": 0, "value": 40, "op": "SCMP_CMP_NE"}]
            }),
            // No namespace flags (CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET).
            serde_json::json!({
                "names": ["clone"], "action": "SCMP_ACT_ALLOW",
                "args": [{"index": 0, "value": 2_114_060_288u64, "valueTwo": 0,
                          "op": "SCMP_CMP_MASKED_EQ"}]
            }),
            serde_json::json!({
                "names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38
            }),
        ]);
        profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": 1,
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "syscalls": syscalls,
        }))
    }

    /// `plan`'s default action, its action groups in the order `assemble` runs them, and its
    /// allow rules.
    fn ordered(plan: Plan) -> (SeccompAction, Vec<(SeccompAction, Rules)>, Rules) {
        let Plan {
            default,
            mut groups,
            allow,
            ..
        } = plan;
        groups.sort_by_key(|(action, _)| precedence(action));
        (default, groups, allow)
    }

    /// The program `assemble` built before it had a dispatch: the stitched sub-programs over
    /// every rule. What the dispatch must agree with.
    fn stitched_reference(plan: Plan) -> Vec<Insn> {
        let (default, groups, allow) = ordered(plan);
        let arch = target_arch().unwrap_or_else(|e| panic!("{e}"));
        stitch(groups, allow, default, arch).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A profile that mixes actions on the same syscalls, with and without conditions.
    fn mixed_profile() -> LinuxSeccomp {
        profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [
                {"names": ["read", "write", "close"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["write"], "action": "SCMP_ACT_KILL_PROCESS",
                 "args": [{"index": 0, "value": 2, "op": "SCMP_CMP_EQ"}]},
                {"names": ["getpid"], "action": "SCMP_ACT_TRAP"},
                {"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 5},
                {"names": ["uname"], "action": "SCMP_ACT_LOG",
                 "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_NE"}]},
                {"names": ["uname", "socket"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["socket"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]}
            ]
        }))
    }

    /// The plans the dispatch tests run on, each made twice (assembling consumes a plan).
    fn plans() -> Vec<(&'static str, [Plan; 2])> {
        let plan = |p: &LinuxSeccomp| plan_profile(p).unwrap_or_else(|e| panic!("{e}"));
        let default = || default_plan().unwrap_or_else(|e| panic!("{e}"));
        let (containerd, mixed) = (containerd_profile(), mixed_profile());
        vec![
            ("default filter", [default(), default()]),
            (
                "containerd-like profile",
                [plan(&containerd), plan(&containerd)],
            ),
            ("mixed profile", [plan(&mixed), plan(&mixed)]),
        ]
    }

    /// Argument values on both sides of every condition the plans above test.
    const PROBE_VALUES: &[u64] = &[
        0,
        1,
        2,
        3,
        5,
        10,
        16,
        17,
        0x0002_0000,
        0x1000_0000,
        0x4000_0000,
        0xffff_ffff,
        u64::MAX,
    ];

    #[test]
    fn the_dispatch_changes_no_verdict() {
        let x32 = X32_SYSCALL_BIT.unwrap_or(0);
        for (name, [plan, again]) in plans() {
            let reference = stitched_reference(again);
            let built = assemble(plan).unwrap_or_else(|e| panic!("{name}: {e}"));
            let program = &built.programs[0];
            for nr in (0..520u32).chain([x32, x32 | 1, x32 | 59, u32::MAX]) {
                for &a0 in PROBE_VALUES {
                    for &a1 in PROBE_VALUES {
                        for arch in [NATIVE_AUDIT_ARCH, I386_AUDIT_ARCH] {
                            let args = args(a0, a1);
                            assert_eq!(
                                run_bpf(program, arch, nr, args),
                                run_bpf(&reference, arch, nr, args),
                                "{name}: syscall {nr}, arguments {args:x?}, arch {arch:#x}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// What the kernel's cache pass does with `program` for syscall `nr` (native arch): the
    /// instructions run until a return, or `None` at the first load of an argument.
    fn cache_pass_steps(program: &[Insn], nr: u32) -> Option<usize> {
        let (mut a, mut pc, mut steps) = (0u32, 0usize, 0usize);
        loop {
            let Insn(code, jt, jf, k) = program[pc];
            pc += 1;
            steps += 1;
            let jump = |cond: bool| usize::from(if cond { jt } else { jf });
            match code {
                LD_W_ABS if k == SECCOMP_DATA_NR => a = nr,
                LD_W_ABS if k == SECCOMP_DATA_ARCH => a = NATIVE_AUDIT_ARCH,
                LD_W_ABS => return None,
                JA => pc += k as usize,
                JEQ_K => pc += jump(a == k),
                JGE_K => pc += jump(a >= k),
                RET_K => return Some(steps),
                other => panic!("unexpected BPF opcode {other:#x} at {}", pc - 1),
            }
        }
    }

    #[test]
    fn the_dispatch_decides_a_syscall_in_a_few_instructions() {
        for (name, [plan, again]) in plans() {
            let (default, groups, allow) = ordered(again);
            let conditional: Vec<u32> = constant_verdicts(&groups, &allow, &default)
                .into_iter()
                .filter_map(|(nr, verdict)| verdict.is_none().then_some(nr))
                .collect();
            let built = assemble(plan).unwrap_or_else(|e| panic!("{name}: {e}"));
            let program = &built.programs[0];
            for nr in (0..520u32).filter(|nr| !conditional.contains(nr)) {
                let steps = cache_pass_steps(program, nr);
                assert!(
                    steps.is_some_and(|s| s <= 24),
                    "{name}: syscall {nr} took {steps:?} instructions ({} in the program)",
                    program.len()
                );
            }
        }
    }

    #[test]
    fn default_filter_compiles() {
        let filters = SeccompFilters::from_spec(None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(filters, SeccompFilters::default_filter());
        assert_eq!(filters.programs.len(), 1);
        #[cfg(target_arch = "x86_64")]
        assert!(filters.skipped.is_empty(), "{:?}", filters.skipped);
        eprintln!("default filter: {}", filters.describe());
    }

    #[test]
    fn default_filter_verdicts() {
        let f = SeccompFilters::default_filter();
        let eperm = errno(libc::EPERM);
        for name in [
            "mount",
            "ptrace",
            "unshare",
            "setns",
            "bpf",
            "io_uring_setup",
            "keyctl",
        ] {
            assert_eq!(verdict(&f, name, args(0, 0)), eperm, "{name}");
        }
        assert_eq!(verdict(&f, "clone3", args(0, 0)), errno(libc::ENOSYS));
        for name in [
            "read",
            "futex",
            "mmap",
            "clock_gettime",
            "getrandom",
            "exit_group",
        ] {
            assert_eq!(verdict(&f, name, args(0, 0)), ALLOW, "{name}");
        }

        // glibc's pthread_create flags, and fork's.
        let thread = (libc::CLONE_VM
            | libc::CLONE_FS
            | libc::CLONE_FILES
            | libc::CLONE_SIGHAND
            | libc::CLONE_THREAD
            | libc::CLONE_SYSVSEM
            | libc::CLONE_SETTLS
            | libc::CLONE_PARENT_SETTID
            | libc::CLONE_CHILD_CLEARTID) as u64;
        assert_eq!(verdict(&f, "clone", args(thread, 0)), ALLOW);
        let fork = (libc::CLONE_CHILD_SETTID | libc::CLONE_CHILD_CLEARTID | libc::SIGCHLD) as u64;
        assert_eq!(verdict(&f, "clone", args(fork, 0)), ALLOW);
        for ns in [
            libc::CLONE_NEWNS,
            libc::CLONE_NEWUTS,
            libc::CLONE_NEWIPC,
            libc::CLONE_NEWUSER,
            libc::CLONE_NEWPID,
            libc::CLONE_NEWNET,
            libc::CLONE_NEWCGROUP,
        ] {
            assert_eq!(
                verdict(&f, "clone", args(fork | ns as u64, 0)),
                eperm,
                "{ns:#x}"
            );
        }

        let (stream, dgram) = (libc::SOCK_STREAM as u64, libc::SOCK_DGRAM as u64);
        let flags = (libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) as u64;
        for domain in [libc::AF_UNIX, libc::AF_INET, libc::AF_INET6] {
            for ty in [stream, dgram, stream | flags, dgram | flags] {
                assert_eq!(verdict(&f, "socket", args(domain as u64, ty)), ALLOW);
            }
            let raw = libc::SOCK_RAW as u64 | flags;
            assert_eq!(verdict(&f, "socket", args(domain as u64, raw)), eperm);
            let packet = u64::from(SOCK_PACKET);
            assert_eq!(verdict(&f, "socket", args(domain as u64, packet)), eperm);
        }
        for domain in [
            libc::AF_PACKET,
            libc::AF_NETLINK,
            libc::AF_VSOCK,
            libc::AF_BLUETOOTH,
        ] {
            assert_eq!(verdict(&f, "socket", args(domain as u64, dgram)), eperm);
        }
        assert_eq!(
            verdict(&f, "socketpair", args(libc::AF_UNIX as u64, stream)),
            ALLOW
        );
        assert_eq!(
            verdict(&f, "socketpair", args(libc::AF_INET as u64, stream)),
            eperm
        );

        assert_eq!(verdict(&f, "personality", args(0xffff_ffff, 0)), ALLOW);
        assert_eq!(verdict(&f, "personality", args(0, 0)), ALLOW);
        assert_eq!(verdict(&f, "personality", args(0x0040000, 0)), eperm);

        // Other ABIs are killed, not filtered.
        let getpid = Sysno::getpid.id() as u32;
        let prog = &f.programs[0];
        assert_eq!(run_bpf(prog, I386_AUDIT_ARCH, 20, args(0, 0)), KILL_PROCESS);
        if let Some(bit) = X32_SYSCALL_BIT {
            assert_eq!(
                run_bpf(prog, NATIVE_AUDIT_ARCH, bit | getpid, args(0, 0)),
                KILL_PROCESS
            );
        }
    }

    #[test]
    fn containerd_profile_compiles() {
        let profile = containerd_profile();
        let started = std::time::Instant::now();
        let filters = SeccompFilters::from_spec(Some(&profile)).unwrap_or_else(|e| panic!("{e}"));
        let elapsed = started.elapsed();
        eprintln!(
            "containerd-like profile: {} in {elapsed:?}",
            filters.describe()
        );

        // clone3's ENOSYS and the allow list, stitched into one program.
        assert_eq!(filters.programs.len(), 1);
        let skipped = &filters.skipped;
        for name in [
            "_llseek",
            "chown32",
            "socketcall",
            "mmap2",
            "clock_gettime64",
            "waitpid",
        ] {
            assert!(skipped.iter().any(|s| s == name), "{name} not skipped");
        }
        for name in ["read", "clone", "personality"] {
            assert!(!skipped.iter().any(|s| s == name), "{name} skipped");
        }
        #[cfg(target_arch = "x86_64")]
        {
            // Every name the profile lists for x86_64 itself must resolve: anything skipped
            // is a 32-bit (or other-arch) name.
            let expected_skips = [
                "chown32",
                "clock_adjtime64",
                "clock_getres_time64",
                "clock_gettime64",
                "clock_nanosleep_time64",
                "fadvise64_64",
                "fchown32",
                "fcntl64",
                "fstat64",
                "fstatat64",
                "fstatfs64",
                "ftruncate64",
                "futex_time64",
                "getegid32",
                "geteuid32",
                "getgid32",
                "getgroups32",
                "getresgid32",
                "getresuid32",
                "getuid32",
                "io_pgetevents_time64",
                "ipc",
                "lchown32",
                "_llseek",
                "lstat64",
                "mmap2",
                "mq_timedreceive_time64",
                "mq_timedsend_time64",
                "_newselect",
                "ppoll_time64",
                "pselect6_time64",
                "recv",
                "recvmmsg_time64",
                "rt_sigtimedwait_time64",
                "sched_rr_get_interval_time64",
                "semtimedop_time64",
                "send",
                "sendfile64",
                "setfsgid32",
                "setfsuid32",
                "setgid32",
                "setgroups32",
                "setregid32",
                "setresgid32",
                "setresuid32",
                "setreuid32",
                "setuid32",
                "sigprocmask",
                "sigreturn",
                "socketcall",
                "stat64",
                "statfs64",
                "timer_gettime64",
                "timer_settime64",
                "timerfd_gettime64",
                "timerfd_settime64",
                "truncate64",
                "ugetrlimit",
                "utimensat_time64",
                "waitpid",
            ];
            assert_eq!(verdict(&filters, "arch_prctl", args(0, 0)), ALLOW);
            let mut got: Vec<_> = skipped.iter().map(String::as_str).collect();
            let mut want = expected_skips.to_vec();
            got.sort_unstable();
            want.sort_unstable();
            assert_eq!(got, want);
        }

        let f = &filters;
        let eperm = errno(libc::EPERM);
        assert_eq!(verdict(f, "clone3", args(0, 0)), errno(libc::ENOSYS));
        for name in [
            "mount",
            "unshare",
            "bpf",
            "ptrace",
            "kexec_load",
            "io_uring_setup",
        ] {
            assert_eq!(verdict(f, name, args(0, 0)), eperm, "{name}");
        }
        for name in ["read", "getpid", "futex", "seccomp"] {
            assert_eq!(verdict(f, name, args(0, 0)), ALLOW, "{name}");
        }
        for persona in [0, 8, 0x20000, 0x20008, 0xffff_ffff] {
            assert_eq!(
                verdict(f, "personality", args(persona, 0)),
                ALLOW,
                "{persona:#x}"
            );
        }
        assert_eq!(verdict(f, "personality", args(0x0040000, 0)), eperm);
        // 64-bit comparison, as libseccomp: high bits make it a different value.
        assert_eq!(verdict(f, "personality", args(1 << 32, 0)), eperm);
        assert_eq!(verdict(f, "socket", args(libc::AF_INET as u64, 1)), ALLOW);
        assert_eq!(verdict(f, "socket", args(libc::AF_VSOCK as u64, 1)), eperm);
        let thread = (libc::CLONE_VM | libc::CLONE_THREAD | libc::CLONE_SIGHAND) as u64;
        assert_eq!(verdict(f, "clone", args(thread, 0)), ALLOW);
        let newns = (libc::CLONE_NEWNS | libc::SIGCHLD) as u64;
        assert_eq!(verdict(f, "clone", args(newns, 0)), eperm);
    }

    #[test]
    fn filters_round_trip_through_json() {
        for filters in [
            SeccompFilters::default_filter(),
            SeccompFilters::from_spec(Some(&containerd_profile()))
                .unwrap_or_else(|e| panic!("{e}")),
        ] {
            let json = serde_json::to_string(&filters).unwrap_or_else(|e| panic!("{e}"));
            let back: SeccompFilters =
                serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(back, filters);
            assert!(back.skipped.is_empty());
        }
    }

    #[test]
    fn actions_follow_kernel_precedence() {
        let f = SeccompFilters::from_spec(Some(&profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_KILL_PROCESS",
            "syscalls": [
                {"names": ["read", "write", "kill", "fchmod"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["getpid"], "action": "SCMP_ACT_LOG"},
                {"names": ["mount"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
                {"names": ["uname"], "action": "SCMP_ACT_ERRNO", "errnoRet": 5},
                {"names": ["uname"], "action": "SCMP_ACT_ERRNO", "errnoRet": 6},
                {"names": ["kill"], "action": "SCMP_ACT_ERRNO",
                 "args": [{"index": 1, "value": 9, "op": "SCMP_CMP_EQ"}]},
                {"names": ["kill"], "action": "SCMP_ACT_TRAP",
                 "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]},
                {"names": ["ptrace"], "action": "SCMP_ACT_TRAP"},
                {"names": ["unshare"], "action": "SCMP_ACT_KILL"},
                {"names": ["getppid"], "action": "SCMP_ACT_TRACE"},
                {"names": ["getuid"], "action": "SCMP_ACT_KILL_PROCESS"},
                {"names": ["no_such_syscall"], "action": "SCMP_ACT_TRAP"}
            ]
        }))))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(verdict(&f, "read", args(0, 0)), ALLOW);
        assert_eq!(verdict(&f, "getpid", args(0, 0)), LOG);
        assert_eq!(verdict(&f, "mount", args(0, 0)), errno(13));
        // Same kind of action twice: the first in the profile wins.
        assert_eq!(verdict(&f, "uname", args(0, 0)), errno(5));
        // kill: TRAP (pid 1) beats ERRNO (signal 9) beats the unconditional ALLOW.
        assert_eq!(verdict(&f, "kill", args(1, 9)), TRAP);
        assert_eq!(verdict(&f, "kill", args(2, 9)), errno(libc::EPERM));
        assert_eq!(verdict(&f, "kill", args(2, 15)), ALLOW);
        assert_eq!(verdict(&f, "ptrace", args(0, 0)), TRAP);
        assert_eq!(verdict(&f, "unshare", args(0, 0)), KILL_THREAD);
        assert_eq!(
            verdict(&f, "getppid", args(0, 0)),
            libc::SECCOMP_RET_TRACE | libc::EPERM as u32
        );
        // Restating the default is dropped, not an error.
        assert_eq!(verdict(&f, "getuid", args(0, 0)), KILL_PROCESS);
        assert_eq!(verdict(&f, "getgid", args(0, 0)), KILL_PROCESS);
        assert_eq!(f.skipped, ["no_such_syscall"]);
    }

    #[test]
    fn argument_semantics() {
        let f = SeccompFilters::from_spec(Some(&profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": 38,
            "flags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_TSYNC"],
            "syscalls": [
                // Distinct indexes: AND.
                {"names": ["kill"], "action": "SCMP_ACT_ALLOW", "args": [
                    {"index": 0, "value": 100, "op": "SCMP_CMP_GE"},
                    {"index": 1, "value": 15, "op": "SCMP_CMP_EQ"}]},
                // A repeated index: runc ORs every comparison of the entry.
                {"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [
                    {"index": 0, "value": 0, "op": "SCMP_CMP_EQ"},
                    {"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
                // (arg & 0xf0) == 0x20
                {"names": ["fchmod"], "action": "SCMP_ACT_ALLOW", "args": [
                    {"index": 1, "value": 240, "valueTwo": 32, "op": "SCMP_CMP_MASKED_EQ"}]},
                // valueTwo outside the mask: never true.
                {"names": ["fchown"], "action": "SCMP_ACT_ALLOW", "args": [
                    {"index": 1, "value": 1, "valueTwo": 2, "op": "SCMP_CMP_MASKED_EQ"}]},
                {"names": ["dup"], "action": "SCMP_ACT_ALLOW", "args": [
                    {"index": 0, "value": 10, "op": "SCMP_CMP_LT"}]},
                {"names": ["dup"], "action": "SCMP_ACT_ALLOW", "args": [
                    {"index": 0, "value": 20, "op": "SCMP_CMP_GT"}]},
                {"names": ["close"], "action": "SCMP_ACT_ALLOW", "args": [
                    {"index": 0, "value": 3, "op": "SCMP_CMP_LE"}]},
                {"names": ["close"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["read"], "action": "SCMP_ACT_ALLOW", "args": [
                    {"index": 2, "value": 0, "op": "SCMP_CMP_NE"}]}
            ]
        }))))
        .unwrap_or_else(|e| panic!("{e}"));
        let enosys = errno(libc::ENOSYS);
        assert_eq!(f.flags, libc::SECCOMP_FILTER_FLAG_LOG as u32);
        assert_eq!(verdict(&f, "getpid", args(0, 0)), enosys);
        assert_eq!(verdict(&f, "kill", args(100, 15)), ALLOW);
        assert_eq!(verdict(&f, "kill", args(99, 15)), enosys);
        assert_eq!(verdict(&f, "kill", args(100, 9)), enosys);
        assert_eq!(verdict(&f, "kill", args(u64::MAX, 15)), ALLOW);
        assert_eq!(verdict(&f, "personality", args(0, 0)), ALLOW);
        assert_eq!(verdict(&f, "personality", args(8, 0)), ALLOW);
        assert_eq!(verdict(&f, "personality", args(9, 0)), enosys);
        assert_eq!(verdict(&f, "fchmod", args(0, 0x2f)), ALLOW);
        assert_eq!(verdict(&f, "fchmod", args(0, 0x1_0000_0020)), ALLOW);
        assert_eq!(verdict(&f, "fchmod", args(0, 0x30)), enosys);
        assert_eq!(verdict(&f, "fchown", args(0, 3)), enosys);
        assert_eq!(verdict(&f, "fchown", args(0, 2)), enosys);
        assert_eq!(verdict(&f, "dup", args(9, 0)), ALLOW);
        assert_eq!(verdict(&f, "dup", args(15, 0)), enosys);
        assert_eq!(verdict(&f, "dup", args(1 << 32, 0)), ALLOW);
        assert_eq!(verdict(&f, "close", args(1000, 0)), ALLOW);
        let mut read = [0u64; 6];
        read[2] = 1;
        assert_eq!(verdict(&f, "read", read), ALLOW);
        assert_eq!(verdict(&f, "read", args(0, 0)), enosys);
    }

    #[test]
    fn allow_everything_installs_nothing() {
        let f = SeccompFilters::from_spec(Some(&profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]
        }))))
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(f.programs.is_empty());
        f.install().unwrap_or_else(|e| panic!("{e}"));
        assert!(
            f.describe().starts_with("0 seccomp program(s)"),
            "{}",
            f.describe()
        );
    }

    fn refusal(value: serde_json::Value) -> String {
        let err = SeccompFilters::from_spec(Some(&profile(value)))
            .err()
            .unwrap_or_else(|| panic!("compiled, want an error"));
        err.to_string()
    }

    #[test]
    fn refusals_name_the_culprit() {
        let msg = refusal(serde_json::json!({"defaultAction": "SCMP_ACT_NOTIFY"}));
        assert!(
            msg.contains("SCMP_ACT_NOTIFY") && msg.contains("defaultAction"),
            "{msg}"
        );

        let msg = refusal(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["openat", "open"], "action": "SCMP_ACT_NOTIFY"}]
        }));
        assert!(
            msg.contains("SCMP_ACT_NOTIFY") && msg.contains("openat, open"),
            "{msg}"
        );

        let msg = refusal(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "listenerPath": "/run/seccomp-agent.sock"
        }));
        assert!(
            msg.contains("listenerPath") && msg.contains("/run/seccomp-agent.sock"),
            "{msg}"
        );

        let msg = refusal(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["ioctl"], "action": "SCMP_ACT_ERRNO",
                          "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]
        }));
        assert!(msg.contains("ioctl") && msg.contains("index 6"), "{msg}");

        let msg = refusal(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "flags": ["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]
        }));
        assert!(
            msg.contains("SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"),
            "{msg}"
        );

        let msg = refusal(serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW", "errnoRet": 1}]
        }));
        assert!(
            msg.contains("errnoRet 1") && msg.contains("SCMP_ACT_ALLOW"),
            "{msg}"
        );

        let msg = refusal(serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 70000
        }));
        assert!(
            msg.contains("70000") && msg.contains("defaultAction"),
            "{msg}"
        );

        // Long allow lists are named by their first names only.
        let names: Vec<String> = (0..50).map(|i| format!("nope{i}")).collect();
        let msg = refusal(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": names, "action": "SCMP_ACT_NOTIFY"}]
        }));
        assert!(msg.contains("nope0, nope1, nope2, … 47 more"), "{msg}");
    }

    #[test]
    fn too_large_is_refused() {
        let entries: Vec<_> = (0..700u64)
            .map(|i| {
                serde_json::json!({"names": ["ioctl"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 1, "value": i, "op": "SCMP_CMP_EQ"}]})
            })
            .collect();
        let msg = refusal(serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO", "syscalls": entries
        }));
        assert!(
            msg.contains("4096") && msg.contains("BPF_MAXINSNS"),
            "{msg}"
        );
    }

    #[test]
    fn errors_read_well() {
        let e = SeccompError::NoNewPrivs { index: 0 };
        let msg = e.to_string();
        assert!(
            msg.contains("no_new_privs") && msg.contains("CAP_SYS_ADMIN"),
            "{msg}"
        );
    }

    // ---- Behaviour: install for real in a child process. ----

    /// Raw syscall returning the result or `-errno`. Allocation-free, for forked children.
    #[allow(unsafe_code)]
    fn sys(nr: libc::c_long, a: [libc::c_long; 6]) -> i64 {
        // SAFETY: every probe passes arguments that are integers, null, or pointers to live
        // NUL-terminated strings / buffers of the size the syscall expects.
        let rc = unsafe { libc::syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]) };
        if rc == -1 {
            -i64::from(io::Error::last_os_error().raw_os_error().unwrap_or(0))
        } else {
            rc
        }
    }

    fn sys0(nr: libc::c_long) -> i64 {
        sys(nr, [0; 6])
    }

    /// Closes a returned descriptor: success becomes 0, errors stay `-errno`.
    fn fd_ok(rc: i64) -> i64 {
        if rc >= 0 {
            sys(libc::SYS_close, [rc as libc::c_long, 0, 0, 0, 0, 0]);
            0
        } else {
            rc
        }
    }

    fn clone_probe(flags: libc::c_int) -> i64 {
        let rc = sys(
            libc::SYS_clone,
            [(flags | libc::SIGCHLD) as libc::c_long, 0, 0, 0, 0, 0],
        );
        if rc == 0 {
            // The new process: leave at once.
            exit_now(0);
        }
        if rc > 0 {
            sys(libc::SYS_wait4, [rc as libc::c_long, 0, 0, 0, 0, 0]);
            return 0;
        }
        rc
    }

    #[allow(unsafe_code)]
    fn exit_now(code: i32) -> ! {
        // SAFETY: `_exit` ends the process without running anything else.
        unsafe { libc::_exit(code) }
    }

    fn socket(domain: i32, ty: i32, proto: i32) -> i64 {
        fd_ok(sys(
            libc::SYS_socket,
            [domain.into(), ty.into(), proto.into(), 0, 0, 0],
        ))
    }

    fn socketpair(domain: i32, ty: i32) -> i64 {
        let mut fds = [-1 as libc::c_int; 2];
        let rc = sys(
            libc::SYS_socketpair,
            [
                domain.into(),
                ty.into(),
                0,
                fds.as_mut_ptr() as libc::c_long,
                0,
                0,
            ],
        );
        if rc == 0 {
            fd_ok(fds[0].into());
            fd_ok(fds[1].into());
        }
        rc
    }

    type Probe = (&'static str, fn() -> i64);

    const NO_SUCH_PID: libc::c_long = 0x7fff_fff0;
    const MOUNT_TARGET: &std::ffi::CStr = c"/nonexistent/wasmcell-seccomp-test";

    const MOUNT: Probe = ("mount", || {
        sys(
            libc::SYS_mount,
            [
                0,
                MOUNT_TARGET.as_ptr() as libc::c_long,
                c"tmpfs".as_ptr() as libc::c_long,
                0,
                0,
                0,
            ],
        )
    });
    const UMOUNT2: Probe = ("umount2", || {
        sys(
            libc::SYS_umount2,
            [MOUNT_TARGET.as_ptr() as libc::c_long, 0, 0, 0, 0, 0],
        )
    });
    // A pid that cannot exist: without the filter the kernel says ESRCH, and a broken filter
    // cannot stop the test process.
    const PTRACE: Probe = ("ptrace(PTRACE_ATTACH)", || {
        sys(
            libc::SYS_ptrace,
            [libc::PTRACE_ATTACH as libc::c_long, NO_SUCH_PID, 0, 0, 0, 0],
        )
    });
    const PACKET: Probe = ("socket(AF_PACKET, SOCK_RAW)", || {
        socket(libc::AF_PACKET, libc::SOCK_RAW, 0)
    });
    const RAW_ICMP: Probe = ("socket(AF_INET, SOCK_RAW, IPPROTO_ICMP)", || {
        socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP)
    });
    const NETLINK: Probe = ("socket(AF_NETLINK)", || {
        socket(libc::AF_NETLINK, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0)
    });
    const TCP: Probe = ("socket(AF_INET, SOCK_STREAM)", || {
        socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0)
    });
    const UNIX: Probe = ("socket(AF_UNIX, SOCK_STREAM)", || {
        socket(libc::AF_UNIX, libc::SOCK_STREAM, 0)
    });
    const PAIR_UNIX: Probe = ("socketpair(AF_UNIX)", || {
        socketpair(libc::AF_UNIX, libc::SOCK_STREAM)
    });
    const PAIR_UNIX_DGRAM: Probe = ("socketpair(AF_UNIX, SOCK_DGRAM)", || {
        socketpair(libc::AF_UNIX, libc::SOCK_DGRAM)
    });
    const PAIR_INET: Probe = ("socketpair(AF_INET)", || {
        socketpair(libc::AF_INET, libc::SOCK_STREAM)
    });
    // Without the filter: EINVAL (size 0 is below the smallest clone_args).
    const CLONE3: Probe = ("clone3(NULL, 0)", || sys0(libc::SYS_clone3));
    const CLONE_NEWNS: Probe = ("clone(CLONE_NEWNS)", || clone_probe(libc::CLONE_NEWNS));
    const CLONE_PLAIN: Probe = ("clone(SIGCHLD)", || clone_probe(0));
    const GETPID: Probe = ("getpid", || i64::from(sys0(libc::SYS_getpid) <= 0));
    const PERSONALITY_QUERY: Probe = ("personality(0xffffffff)", || {
        sys(libc::SYS_personality, [0xffff_ffff, 0, 0, 0, 0, 0]).min(0)
    });
    const PERSONALITY_SET: Probe = ("personality(ADDR_NO_RANDOMIZE)", || {
        sys(libc::SYS_personality, [0x0040000, 0, 0, 0, 0, 0]).min(0)
    });
    const BPF: Probe = ("bpf", || sys0(libc::SYS_bpf));
    const IO_URING: Probe = ("io_uring_setup", || {
        sys(libc::SYS_io_uring_setup, [1, 0, 0, 0, 0, 0])
    });
    // Last: without the filter it succeeds and changes what later probes would see.
    const UNSHARE_USER: Probe = ("unshare(CLONE_NEWUSER)", || {
        sys(
            libc::SYS_unshare,
            [libc::CLONE_NEWUSER.into(), 0, 0, 0, 0, 0],
        )
    });

    const MAX_PROBES: usize = 32;

    /// Forks; the child runs `child` (which must not allocate or panic: the test binary is
    /// multi-threaded) and exits with its return value. Returns the raw wait status.
    #[allow(unsafe_code)]
    fn in_child(child: impl FnOnce() -> i32) -> libc::c_int {
        // SAFETY: the child only makes raw syscalls and leaves with `_exit`.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", io::Error::last_os_error());
        if pid == 0 {
            exit_now(child());
        }
        let mut status = 0;
        // SAFETY: `status` is a valid out-pointer; `pid` is our child.
        let rc = unsafe { libc::waitpid(pid, &raw mut status, 0) };
        assert_eq!(rc, pid, "waitpid: {}", io::Error::last_os_error());
        status
    }

    fn set_no_new_privs() -> i64 {
        sys(
            libc::SYS_prctl,
            [libc::PR_SET_NO_NEW_PRIVS.into(), 1, 0, 0, 0, 0],
        )
    }

    /// Runs `probes` in a child after installing `filters` (with `no_new_privs`), and returns
    /// what each one gave.
    #[allow(unsafe_code)]
    fn run_probes(filters: Option<&SeccompFilters>, probes: &[Probe]) -> Vec<i64> {
        assert!(probes.len() <= MAX_PROBES);
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: `fds` has room for the two descriptors.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        let [read_fd, write_fd] = fds;
        let status = in_child(|| {
            let mut out = [i64::MIN; MAX_PROBES];
            if set_no_new_privs() != 0 {
                return 10;
            }
            if let Some(filters) = filters
                && filters.install().is_err()
            {
                return 11;
            }
            for (slot, (_, probe)) in out.iter_mut().zip(probes) {
                *slot = probe();
            }
            // SAFETY: `out` is a live buffer of exactly that many bytes.
            let n =
                unsafe { libc::write(write_fd, out.as_ptr().cast(), std::mem::size_of_val(&out)) };
            if n == std::mem::size_of_val(&out) as isize {
                0
            } else {
                12
            }
        });
        // SAFETY: closing our copy of the write end, so the read below sees EOF.
        unsafe { libc::close(write_fd) };
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "child failed: status {status:#x}"
        );
        // SAFETY: `read_fd` is the pipe's read end, owned from here on.
        let mut pipe = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(read_fd) };
        let mut bytes = Vec::new();
        pipe.read_to_end(&mut bytes)
            .unwrap_or_else(|e| panic!("{e}"));
        let results: Vec<i64> = bytes
            .chunks_exact(8)
            .map(|c| i64::from_ne_bytes(c.try_into().unwrap_or_else(|e| panic!("{e}"))))
            .collect();
        results[..probes.len()].to_vec()
    }

    fn check(filters: Option<&SeccompFilters>, expect: &[(Probe, i64)]) {
        let probes: Vec<Probe> = expect.iter().map(|(p, _)| *p).collect();
        let got = run_probes(filters, &probes);
        let mut wrong = String::new();
        for (((name, _), want), got) in expect.iter().zip(got) {
            if got != *want {
                let _ = writeln!(wrong, "{name}: got {got}, want {want}");
            }
        }
        assert!(wrong.is_empty(), "\n{wrong}");
    }

    const EPERM: i64 = -(libc::EPERM as i64);
    const ENOSYS: i64 = -(libc::ENOSYS as i64);

    #[test]
    fn default_filter_in_a_real_process() {
        let filters = SeccompFilters::default_filter();
        check(
            Some(&filters),
            &[
                (MOUNT, EPERM),
                (UMOUNT2, EPERM),
                (PTRACE, EPERM),
                (PACKET, EPERM),
                (RAW_ICMP, EPERM),
                (NETLINK, EPERM),
                (TCP, 0),
                (UNIX, 0),
                (PAIR_UNIX, 0),
                (PAIR_INET, EPERM),
                (CLONE3, ENOSYS),
                (CLONE_NEWNS, EPERM),
                (CLONE_PLAIN, 0),
                (GETPID, 0),
                (PERSONALITY_QUERY, 0),
                (PERSONALITY_SET, EPERM),
                (BPF, EPERM),
                (IO_URING, EPERM),
                (UNSHARE_USER, EPERM),
            ],
        );
    }

    /// Stacked on the default filter, and alone (a spec whose profile allows everything
    /// compiles to no program): every way to a new socket is refused, nothing else changes.
    #[test]
    fn no_new_sockets_stacks_on_any_filter() {
        let mut stacked = SeccompFilters::default_filter();
        stacked.stack(SeccompFilters::no_new_sockets());
        let mut alone = SeccompFilters::from_spec(Some(&profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW"
        }))))
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(alone.programs.is_empty());
        alone.stack(SeccompFilters::no_new_sockets());
        for filters in [&stacked, &alone] {
            check(
                Some(filters),
                &[
                    (TCP, EPERM),
                    (UNIX, EPERM),
                    (NETLINK, EPERM),
                    (PAIR_UNIX, 0),
                    (PAIR_UNIX_DGRAM, EPERM),
                    (PAIR_INET, EPERM),
                    (IO_URING, EPERM),
                    (CLONE_PLAIN, 0),
                    (GETPID, 0),
                    (PERSONALITY_QUERY, 0),
                ],
            );
        }
        let f = SeccompFilters::no_new_sockets();
        assert_eq!(f.programs.len(), 1);
        for name in NO_NEW_SOCKETS {
            assert_eq!(verdict(&f, name, args(0, 0)), errno(libc::EPERM), "{name}");
        }
        for name in ["read", "openat", "mmap", "accept4", "sendmsg", "sendto"] {
            assert_eq!(verdict(&f, name, args(0, 0)), ALLOW, "{name}");
        }
        let unix = libc::AF_UNIX as u64;
        let cloexec = libc::SOCK_CLOEXEC as u64;
        for (domain, ty, want) in [
            (unix, libc::SOCK_STREAM as u64 | cloexec, ALLOW),
            (unix, libc::SOCK_DGRAM as u64 | cloexec, errno(libc::EPERM)),
            (unix, libc::SOCK_SEQPACKET as u64, errno(libc::EPERM)),
            (
                libc::AF_INET as u64,
                libc::SOCK_STREAM as u64,
                errno(libc::EPERM),
            ),
        ] {
            assert_eq!(
                verdict(&f, "socketpair", args(domain, ty)),
                want,
                "{domain} {ty:#x}"
            );
        }
    }

    /// The probes mean something: without a filter the kernel answers differently.
    #[test]
    fn probes_without_a_filter() {
        let got = run_probes(None, &[PTRACE, CLONE3, MOUNT, GETPID]);
        assert_eq!(got[0], -i64::from(libc::ESRCH));
        assert_eq!(got[1], -i64::from(libc::EINVAL));
        // Only root gets past mount(2)'s permission check to the missing target.
        if euid() == 0 {
            assert_eq!(got[2], -i64::from(libc::ENOENT));
        }
        assert_eq!(got[3], 0);
    }

    fn euid() -> i64 {
        sys0(libc::SYS_geteuid)
    }

    #[test]
    fn containerd_profile_in_a_real_process() {
        let filters = SeccompFilters::from_spec(Some(&containerd_profile()))
            .unwrap_or_else(|e| panic!("{e}"));
        check(
            Some(&filters),
            &[
                (CLONE3, ENOSYS),
                (MOUNT, EPERM),
                (UNSHARE_USER, EPERM),
                (BPF, EPERM),
                (GETPID, 0),
                (TCP, 0),
                (CLONE_PLAIN, 0),
                (CLONE_NEWNS, EPERM),
                (PERSONALITY_QUERY, 0),
                (PERSONALITY_SET, EPERM),
            ],
        );
    }

    #[test]
    fn install_without_no_new_privs_names_it() {
        let filters = SeccompFilters::default_filter();
        let status = in_child(|| {
            // Shed root (and with it CAP_SYS_ADMIN) so the kernel insists on no_new_privs.
            if euid() == 0 {
                let nobody = 65534;
                if sys(libc::SYS_setresgid, [nobody, nobody, nobody, 0, 0, 0]) != 0
                    || sys(libc::SYS_setresuid, [nobody, nobody, nobody, 0, 0, 0]) != 0
                {
                    return 10;
                }
            }
            match filters.install() {
                Err(SeccompError::NoNewPrivs { index: 0 }) => 0,
                Ok(()) => 1,
                Err(_) => 2,
            }
        });
        assert!(libc::WIFEXITED(status), "status {status:#x}");
        assert_eq!(
            libc::WEXITSTATUS(status),
            0,
            "0 = NoNewPrivs, 1 = installed, 2 = other"
        );
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn x32_syscalls_kill_the_process() {
        let filters = SeccompFilters::default_filter();
        let status = in_child(|| {
            if set_no_new_privs() != 0 || filters.install().is_err() {
                return 10;
            }
            sys0(0x4000_0000 | libc::SYS_getpid);
            0
        });
        assert!(
            libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSYS,
            "status {status:#x}"
        );
    }

    // ---- A whole std workload under the filter, in a fresh copy of this test binary. ----

    const WORKLOAD_ENV: &str = "WASMCELL_SECCOMP_TEST_WORKLOAD";

    fn this_test(name: &str) -> String {
        let path = module_path!();
        let path = path.split_once("::").map_or(path, |(_, rest)| rest);
        format!("{path}::{name}")
    }

    /// Runs [`workload_child`] in a new process (std threads are fine there, unlike after
    /// `fork` in this multi-threaded harness).
    #[test]
    fn std_workload_keeps_working() {
        for which in ["default", "containerd"] {
            let out = std::process::Command::new(
                std::env::current_exe().unwrap_or_else(|e| panic!("{e}")),
            )
            .args(["--exact", &this_test("workload_child"), "--test-threads=1"])
            .args(["--nocapture"])
            .env(WORKLOAD_ENV, which)
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success() && stdout.contains("1 passed"),
                "{which}: {}\n{stdout}\n{stderr}",
                out.status
            );
        }
    }

    /// Does nothing unless started by [`std_workload_keeps_working`].
    #[test]
    fn workload_child() {
        let Ok(which) = std::env::var(WORKLOAD_ENV) else {
            return;
        };
        let filters = match which.as_str() {
            "default" => SeccompFilters::default_filter(),
            _ => SeccompFilters::from_spec(Some(&containerd_profile()))
                .unwrap_or_else(|e| panic!("{e}")),
        };
        assert_eq!(set_no_new_privs(), 0);
        filters.install().unwrap_or_else(|e| panic!("{e}"));

        // glibc tries clone3 first, gets ENOSYS, and falls back to clone.
        let worker = std::thread::spawn(|| (0..1000u64).sum::<u64>());
        assert_eq!(
            worker.join().unwrap_or_else(|_| panic!("worker panicked")),
            499_500
        );

        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let mut client =
            std::net::TcpStream::connect(listener.local_addr().unwrap_or_else(|e| panic!("{e}")))
                .unwrap_or_else(|e| panic!("{e}"));
        let (mut server, _) = listener.accept().unwrap_or_else(|e| panic!("{e}"));
        client.write_all(b"ping").unwrap_or_else(|e| panic!("{e}"));
        let mut buf = [0u8; 4];
        server
            .read_exact(&mut buf)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&buf, b"ping");

        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        udp.send_to(b"u", udp.local_addr().unwrap_or_else(|e| panic!("{e}")))
            .unwrap_or_else(|e| panic!("{e}"));
        let mut one = [0u8; 1];
        assert_eq!(udp.recv(&mut one).unwrap_or_else(|e| panic!("{e}")), 1);

        let (mut a, mut b) =
            std::os::unix::net::UnixStream::pair().unwrap_or_else(|e| panic!("{e}"));
        a.write_all(b"x").unwrap_or_else(|e| panic!("{e}"));
        b.read_exact(&mut one).unwrap_or_else(|e| panic!("{e}"));

        let dir = std::env::temp_dir().join(format!("wasmcell-seccomp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let file = dir.join("f");
        std::fs::write(&file, vec![7u8; 1 << 20]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            std::fs::read(&file).unwrap_or_else(|e| panic!("{e}")).len(),
            1 << 20
        );
        assert_eq!(
            std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("{e}"))
                .count(),
            1
        );
        std::fs::remove_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));

        // Large allocations go through mmap/munmap; RandomState through getrandom.
        let big = vec![1u8; 64 << 20];
        assert_eq!(
            big.iter().step_by(4096).map(|b| u64::from(*b)).sum::<u64>(),
            16384
        );
        let _ = std::collections::hash_map::RandomState::new();
        assert!(std::time::SystemTime::now() > std::time::UNIX_EPOCH);

        let memfd = sys(
            libc::SYS_memfd_create,
            [c"wasm".as_ptr() as libc::c_long, 1, 0, 0, 0, 0],
        );
        assert_eq!(fd_ok(memfd), 0);
        assert_eq!(
            fd_ok(sys(
                libc::SYS_epoll_create1,
                [libc::EPOLL_CLOEXEC.into(), 0, 0, 0, 0, 0]
            )),
            0
        );
        assert_eq!(
            fd_ok(sys(
                libc::SYS_eventfd2,
                [0, libc::EFD_CLOEXEC.into(), 0, 0, 0, 0]
            )),
            0
        );
        assert_eq!(
            fd_ok(sys(
                libc::SYS_timerfd_create,
                [libc::CLOCK_MONOTONIC.into(), 0, 0, 0, 0, 0]
            )),
            0
        );

        // Still confined, from std too.
        assert_eq!(
            sys(libc::SYS_unshare, [libc::CLONE_NEWNS.into(), 0, 0, 0, 0, 0]),
            EPERM
        );
    }
}

//! The escape drill (debug builds only; the module does not exist in a release build).
//!
//! It answers "what if a guest broke out of wasm?": native code in a real guest process,
//! confined by the same code path as every guest ([`crate::confine`], applied by
//! [`crate::guest`]), tries what an escaped guest would try and prints one line per attempt,
//! `blocked NAME: …` or `ESCAPED NAME: …`. It runs instead of the wasm program when the
//! container's environment has `WASMCELL_ESCAPE_DRILL=secret=PATH;dir=PATH;pid=PID;port=PORT`:
//! a host file that must stay unreadable, a host directory that must stay unwritten, a host
//! process that must stay unsignalled and a host loopback port that must stay unreachable.
//! The exit code is the number of escapes.

use std::ffi::CString;

/// The environment variable that asks for the drill.
pub const DRILL_ENV: &str = "WASMCELL_ESCAPE_DRILL";

/// What the drill probes.
#[derive(Debug, Default)]
pub struct Drill {
    secret: String,
    dir: String,
    pid: i32,
    port: u16,
}

/// The drill's settings, when the container's environment asks for it.
pub fn requested(env: &[(String, String)]) -> Option<Drill> {
    let (_, value) = env.iter().find(|(k, _)| k == DRILL_ENV)?;
    let mut drill = Drill::default();
    for part in value.split(';') {
        match part.split_once('=') {
            Some(("secret", v)) => drill.secret = v.to_owned(),
            Some(("dir", v)) => drill.dir = v.to_owned(),
            Some(("pid", v)) => drill.pid = v.parse().unwrap_or(0),
            Some(("port", v)) => drill.port = v.parse().unwrap_or(0),
            _ => {}
        }
    }
    Some(drill)
}

fn errno() -> std::io::Error {
    std::io::Error::last_os_error()
}

fn cstr(s: &str) -> CString {
    CString::new(s).unwrap_or_default()
}

/// Runs every attempt; returns the number of escapes.
#[allow(unsafe_code)]
pub fn run(drill: &Drill) -> i32 {
    let mut escapes = 0;
    let mut verdict = |name: &str, escaped: bool, detail: String| {
        if escaped {
            escapes += 1;
            println!("ESCAPED {name}: {detail}");
        } else {
            println!("blocked {name}: {detail}");
        }
    };

    for path in ["/etc/shadow", drill.secret.as_str()] {
        let opened = std::fs::read(path);
        verdict(
            &format!("read {path}"),
            opened.is_ok(),
            format!("{:?}", opened.map(|b| b.len())),
        );
    }
    let outside = format!("{}/escaped-by-guest", drill.dir);
    let written = std::fs::write(&outside, b"x");
    verdict(
        "write outside the rootfs",
        written.is_ok(),
        format!("{outside}: {written:?}"),
    );
    let listing = std::fs::read_dir("/proc").map(|d| d.count());
    // SAFETY: kill with signal 0 only checks whether the pid exists and may be signalled.
    let visible = unsafe { libc::kill(drill.pid, 0) } == 0;
    verdict(
        "list host processes",
        visible || listing.as_ref().is_ok_and(|n| *n > 0),
        format!("/proc: {listing:?}; kill({}, 0): {}", drill.pid, errno()),
    );
    // SAFETY: plain system calls on integers; a failure only sets errno.
    let signalled = unsafe { libc::kill(drill.pid, libc::SIGTERM) } == 0;
    verdict(
        "signal a host process",
        signalled,
        format!("kill({}, SIGTERM): {}", drill.pid, errno()),
    );
    // SAFETY: as above; PTRACE_ATTACH takes no pointers.
    let traced = unsafe { libc::ptrace(libc::PTRACE_ATTACH, drill.pid, 0, 0) } == 0;
    verdict(
        "ptrace a host process",
        traced,
        format!("ptrace(ATTACH, {}): {}", drill.pid, errno()),
    );
    let (tmpfs, target) = (cstr("tmpfs"), cstr("/"));
    // SAFETY: every pointer is a live NUL-terminated string or null.
    let mounted = unsafe {
        libc::mount(
            tmpfs.as_ptr(),
            target.as_ptr(),
            tmpfs.as_ptr(),
            0,
            std::ptr::null(),
        )
    } == 0;
    verdict("mount", mounted, format!("mount(tmpfs, /): {}", errno()));
    for (name, flag) in [
        ("unshare user namespace", libc::CLONE_NEWUSER),
        ("unshare mount namespace", libc::CLONE_NEWNS),
    ] {
        // SAFETY: unshare takes flags only.
        let unshared = unsafe { libc::unshare(flag) } == 0;
        verdict(name, unshared, format!("{}", errno()));
    }
    // SAFETY: setns on fd 0 (stdin, not a namespace) with any type: success would be a
    // failure of the filter; the error is the point.
    let joined = unsafe { libc::setns(0, 0) };
    let setns_errno = errno();
    verdict(
        "setns",
        joined == 0 || setns_errno.raw_os_error() != Some(libc::EPERM),
        format!("setns: {setns_errno} (EPERM expected: the call itself is refused)"),
    );
    let empty = cstr("");
    // SAFETY: a null module image of length 0 and an empty parameter string.
    let loaded = unsafe {
        libc::syscall(
            libc::SYS_init_module,
            std::ptr::null::<u8>(),
            0,
            empty.as_ptr(),
        )
    };
    let init_errno = errno();
    verdict(
        "load a kernel module (init_module)",
        loaded == 0 || init_errno.raw_os_error() != Some(libc::EPERM),
        format!("{init_errno}"),
    );
    // SAFETY: fd -1 and an empty parameter string.
    let finit = unsafe { libc::syscall(libc::SYS_finit_module, -1, empty.as_ptr(), 0) };
    let finit_errno = errno();
    verdict(
        "load a kernel module (finit_module)",
        finit == 0 || finit_errno.raw_os_error() != Some(libc::EPERM),
        format!("{finit_errno}"),
    );
    for (name, domain, kind, protocol) in [
        (
            "raw IP socket",
            libc::AF_INET,
            libc::SOCK_RAW,
            libc::IPPROTO_ICMP,
        ),
        ("packet socket", libc::AF_PACKET, libc::SOCK_RAW, 0),
    ] {
        // SAFETY: socket takes integers; a returned fd is closed right away.
        let fd = unsafe { libc::socket(domain, kind, protocol) };
        let detail = if fd >= 0 {
            format!("socket opened (fd {fd})")
        } else {
            format!("{}", errno())
        };
        if fd >= 0 {
            // SAFETY: fd was just returned by socket and is owned here.
            unsafe { libc::close(fd) };
        }
        verdict(name, fd >= 0, detail);
    }
    // SAFETY: getuid has no failure mode; setuid takes an integer.
    let already_root = unsafe { libc::getuid() } == 0;
    if already_root {
        println!("skipped setuid(0): the guest already runs as uid 0");
    } else {
        // SAFETY: as above.
        let rooted = unsafe { libc::setuid(0) } == 0;
        verdict("setuid(0)", rooted, format!("{}", errno()));
    }
    if crate::empty_network::joined() {
        // SAFETY: socket takes integers; a returned fd is closed right away.
        let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) };
        let detail = format!("{}", errno());
        if fd >= 0 {
            // SAFETY: fd was just returned by socket and is owned here.
            unsafe { libc::close(fd) };
        }
        verdict(
            "a socket in the shared empty network namespace",
            fd >= 0,
            detail,
        );
    }
    network_change(&mut verdict);
    chroot_escape(drill, &mut verdict);
    fd_escape(drill, &mut verdict);
    let loopback = std::net::TcpStream::connect(("127.0.0.1", drill.port));
    verdict(
        "reach the host's loopback",
        loopback.is_ok(),
        format!("127.0.0.1:{}: {:?}", drill.port, loopback.map(|_| ())),
    );
    escapes
}

/// A change to the guest's network namespace — its loopback brought up — which a namespace
/// lent to the next guest ([`crate::network_pool`]) must not carry.
#[allow(unsafe_code)]
fn network_change(verdict: &mut impl FnMut(&str, bool, String)) {
    let name = "change its network namespace (loopback up)";
    // SAFETY: socket takes integers; a returned fd is closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
    if fd < 0 {
        verdict(name, false, format!("socket: {}", errno()));
        return;
    }
    // SAFETY: ifreq is plain data, valid zeroed.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(b"lo") {
        *slot = *byte as libc::c_char;
    }
    // SAFETY: a live socket and a live ifreq naming an interface.
    let read = unsafe { libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut request) };
    let (changed, detail) = if read == 0 {
        // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
        unsafe { request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
        // SAFETY: as above.
        let set = unsafe { libc::ioctl(fd, libc::SIOCSIFFLAGS, &request) };
        let detail = if set == 0 {
            "SIOCSIFFLAGS: the loopback is up".to_owned()
        } else {
            format!("SIOCSIFFLAGS: {}", errno())
        };
        (set == 0, detail)
    } else {
        (false, format!("SIOCGIFFLAGS: {}", errno()))
    };
    // SAFETY: fd was returned by socket above and is owned here.
    unsafe { libc::close(fd) };
    verdict(name, changed, detail);
}

/// The classic chroot escape: chroot into a subdirectory, climb out with `..`, chroot there.
#[allow(unsafe_code)]
fn chroot_escape(drill: &Drill, verdict: &mut impl FnMut(&str, bool, String)) {
    let _ = std::fs::create_dir_all("/tmp/drill-jail");
    let jail = cstr("/tmp/drill-jail");
    // SAFETY: a live NUL-terminated path.
    let jailed = unsafe { libc::chroot(jail.as_ptr()) } == 0;
    let detail = if jailed {
        for _ in 0..64 {
            let _ = std::env::set_current_dir("..");
        }
        let here = cstr(".");
        // SAFETY: as above.
        unsafe { libc::chroot(here.as_ptr()) };
        format!("chroot allowed; climbed to {:?}", std::env::current_dir())
    } else {
        format!("chroot: {}", errno())
    };
    let escaped = std::fs::metadata(&drill.secret).is_ok();
    verdict("chroot escape", escaped, detail);
}

/// Any open directory descriptor that leads out of the root.
#[allow(unsafe_code)]
fn fd_escape(drill: &Drill, verdict: &mut impl FnMut(&str, bool, String)) {
    let climb = format!(
        "{}{}",
        "../".repeat(64),
        drill.secret.trim_start_matches('/')
    );
    let mut directories = Vec::new();
    let mut escaped = false;
    for fd in 0..1024 {
        // SAFETY: fchdir on an arbitrary integer either fails or changes the cwd.
        if unsafe { libc::fchdir(fd) } == 0 {
            directories.push(fd);
            escaped |= std::fs::metadata(&climb).is_ok();
        }
    }
    let _ = std::env::set_current_dir("/");
    verdict(
        "fchdir escape",
        escaped,
        format!("directory fds: {directories:?}"),
    );
}

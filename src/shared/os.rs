//! What sharing needs from the operating system (Linux): the socket's
//! address, peer credentials, whether a process lives, what file system
//! holds the store, and the fork hook.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::Once;

use crate::error::{Error, Result};

/// The socket's file name inside the store directory.
pub const SOCKET_FILE: &str = "tokenstore.sock";

/// The longest path a Unix socket address holds on Linux (108 bytes with
/// its terminating NUL).
const SUN_PATH_MAX: usize = 107;

/// Where the socket of the store at `dir` is bound and reached. A path too
/// long for a socket address is reached through `/proc/self/fd/N/`, N being
/// a descriptor of the directory that `anchor` keeps open.
pub struct SocketAddress {
    /// The socket's path as the file system names it.
    pub file: PathBuf,
    /// The path given to bind and connect.
    pub address: PathBuf,
    /// The directory's descriptor when `address` goes through it.
    _anchor: Option<File>,
}

impl SocketAddress {
    pub fn of(dir: &Path) -> Result<SocketAddress> {
        let file = dir.join(SOCKET_FILE);
        if file.as_os_str().len() <= SUN_PATH_MAX {
            return Ok(SocketAddress {
                address: file.clone(),
                file,
                _anchor: None,
            });
        }
        let anchor = File::open(dir).map_err(|e| {
            Error::from(io::Error::new(
                e.kind(),
                format!("cannot open the store directory {}: {e}", dir.display()),
            ))
        })?;
        let address = PathBuf::from(format!(
            "/proc/self/fd/{}/{SOCKET_FILE}",
            anchor.as_raw_fd()
        ));
        Ok(SocketAddress {
            file,
            address,
            _anchor: Some(anchor),
        })
    }
}

/// The peer process of a connected Unix socket.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub pid: u32,
    pub uid: u32,
}

/// The credentials the kernel records for the other end of `stream`
/// (SO_PEERCRED: the process that connected, or that listened).
pub fn peer(stream: &UnixStream) -> io::Result<Peer> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes of the sizes given, and
    // the descriptor is a socket owned by `stream`.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Peer {
        pid: cred.pid as u32,
        uid: cred.uid,
    })
}

/// This process's effective user id.
pub fn my_uid() -> u32 {
    // SAFETY: geteuid cannot fail and touches no memory.
    unsafe { libc::geteuid() }
}

/// Waits until `fd` is readable or `timeout` has passed, to the
/// microsecond (`ppoll`), and says whether it is readable. An epoll
/// descriptor is readable while it has events to report: the save loop
/// lingers with this, because `epoll_wait` counts in whole milliseconds
/// (mio rounds a shorter wait up to one).
pub fn wait_readable(fd: &impl AsRawFd, timeout: std::time::Duration) -> io::Result<bool> {
    let mut pollfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let timeout = libc::timespec {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: timeout.subsec_nanos() as libc::c_long, // under 10^9
    };
    // SAFETY: one valid pollfd and a valid timespec, both alive for the
    // call; no signal mask.
    let n = unsafe { libc::ppoll(&mut pollfd, 1, &timeout, std::ptr::null()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n > 0)
}

/// Whether process `pid` still exists (a zombie counts as gone only once
/// reaped; its sockets are closed by then anyway).
pub fn alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 checks for existence and sends nothing.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// The file systems where locks and sockets do not reliably span the
/// processes that see the directory, by `statfs` magic number.
const UNSHAREABLE: &[(i64, &str)] = &[
    (0x6969, "NFS"),
    (0x517B, "SMB"),
    (0xFF53_4D42, "CIFS"),
    (0xFE53_4D42, "SMB2"),
    (0x6573_5546, "FUSE"),
    (0x0102_1997, "9p"),
    (0x00C3_6400, "CephFS"),
    (0x0BD0_0BD0, "Lustre"),
    (0x4750_4653, "GPFS"),
];

/// The name of the file system kind `magic` stands for, if it is one that
/// sharing refuses.
pub fn unshareable_kind(magic: i64) -> Option<&'static str> {
    UNSHAREABLE
        .iter()
        .find(|(m, _)| *m == magic)
        .map(|(_, name)| *name)
}

/// The `statfs` magic number of the file system holding `dir`.
pub fn fs_magic(dir: &Path) -> io::Result<i64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path with a NUL byte"))?;
    let mut stat = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: `path` is NUL-terminated and `stat` is valid for a write.
    let rc = unsafe { libc::statfs(path.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statfs succeeded, so it wrote the whole struct.
    let stat = unsafe { stat.assume_init() };
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    Ok(i64::from(stat.f_type as i64))
}

/// Refuses to share a store on a file system whose locks and sockets do not
/// hold across processes.
pub fn check_shareable(dir: &Path) -> Result<()> {
    let magic = fs_magic(dir)?;
    refuse_kind(dir, unshareable_kind(magic))
}

pub fn refuse_kind(dir: &Path, kind: Option<&str>) -> Result<()> {
    match kind {
        None => Ok(()),
        Some(kind) => Err(Error::Unsupported {
            operation: format!(
                "sharing the embedded store at {} between processes on a {kind} file system \
                 (its locks and sockets do not reliably reach every process that sees the \
                 directory)",
                dir.display()
            ),
            backend: "the embedded store",
            instead: "keep the store on a local disk, use a database backend (a postgres:// or \
                      mysql:// URL) for processes on several machines, or open it exclusively \
                      (OpenOptions::exclusive)"
                .into(),
        }),
    }
}

/// How many times this process is a fork's child of the process that
/// first used a shared store (counted by the fork hook).
static FORKS: AtomicU64 = AtomicU64::new(0);

/// Descriptors a forked child must close at once: the lock file and the
/// database files of a store this process owns, so that a child never keeps
/// a dead owner's locks (flock locks belong to the open file description,
/// which a child shares). -1: a free slot.
static CLOSE_IN_CHILD: [AtomicI32; 64] = [const { AtomicI32::new(-1) }; 64];

static HOOK: Once = Once::new();

/// Whether this process has run the storage engine (owned a store).
static ENGINE_STARTED: AtomicBool = AtomicBool::new(false);

/// Whether this process is a fork's child of one that had run the engine:
/// sled's IO thread pool counts threads that do not exist in a child, so
/// work queued there would never run. Such a child uses a store only
/// through an owner, and never becomes one.
static ENGINE_INHERITED: AtomicBool = AtomicBool::new(false);

/// Notes that this process runs the engine (see [`engine_inherited`]).
pub fn engine_started() {
    ENGINE_STARTED.store(true, Ordering::SeqCst);
}

/// Whether this process may not run the engine (a fork's child of one
/// that did).
pub fn engine_inherited() -> bool {
    ENGINE_INHERITED.load(Ordering::SeqCst)
}

extern "C" fn in_child() {
    FORKS.fetch_add(1, Ordering::SeqCst);
    if ENGINE_STARTED.load(Ordering::SeqCst) {
        ENGINE_INHERITED.store(true, Ordering::SeqCst);
    }
    for slot in &CLOSE_IN_CHILD {
        let fd = slot.swap(-1, Ordering::SeqCst);
        if fd >= 0 {
            // SAFETY: close is async-signal-safe; the descriptor is this
            // (child) process's copy, which nothing in the child uses: the
            // store that opened it is never touched again here.
            unsafe {
                libc::close(fd);
            }
        }
    }
}

/// Installs the fork hook (once per process) and returns the fork count
/// now: a store compares it with [`forks`] to tell it was inherited.
pub fn fork_generation() -> u64 {
    HOOK.call_once(|| {
        // SAFETY: `in_child` only touches atomics and calls close.
        unsafe {
            libc::pthread_atfork(None, None, Some(in_child));
        }
    });
    FORKS.load(Ordering::SeqCst)
}

/// The fork count now (see [`fork_generation`]).
pub fn forks() -> u64 {
    FORKS.load(Ordering::Relaxed)
}

/// Registers every descriptor of this process that refers to a file inside
/// `dir` to be closed in forked children; returns them (to unregister).
pub fn close_in_children(dir: &Path) -> Vec<i32> {
    let Ok(dir) = dir.canonicalize() else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    let mut registered = Vec::new();
    for entry in entries.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        if target.starts_with(&dir) && target != dir {
            if let Some(slot) = CLOSE_IN_CHILD.iter().find(|slot| {
                slot.compare_exchange(-1, fd, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            }) {
                let _ = slot;
                registered.push(fd);
            }
        }
    }
    registered
}

/// Registers one descriptor (the listening socket of a store this process
/// serves) to be closed in forked children; `false` when no slot is free.
pub fn close_fd_in_children(fd: i32) -> bool {
    CLOSE_IN_CHILD.iter().any(|slot| {
        slot.compare_exchange(-1, fd, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    })
}

/// Undoes [`close_in_children`] (the store closed those descriptors).
pub fn forget_in_children(fds: &[i32]) {
    for fd in fds {
        for slot in &CLOSE_IN_CHILD {
            if slot
                .compare_exchange(*fd, -1, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                break;
            }
        }
    }
}

/// Refuses a store directory that belongs to another user: only the
/// processes of the user that owns a store may use it (as owner or client).
pub fn check_owner(dir: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let owner = std::fs::metadata(dir)?.uid();
    let me = my_uid();
    if owner == me {
        return Ok(());
    }
    Err(Error::from(io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!(
            "the token store at {} belongs to uid {owner}, and only that user's processes may \
             use it (this process runs as uid {me}); run it as that user",
            dir.display()
        ),
    )))
}

/// Random bytes from the operating system.
pub fn random<const N: usize>() -> Result<[u8; N]> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| Error::from(io::Error::other(e.to_string())))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_for_readability_ends_to_the_microsecond() {
        use std::io::Write;
        use std::time::{Duration, Instant};
        let (a, mut b) = UnixStream::pair().unwrap();
        // Nothing to read: each wait ends when its 200 µs are up. The
        // shortest of 20 is under a millisecond (epoll_wait, which counts
        // whole milliseconds, could not return before one).
        let shortest = (0..20)
            .map(|_| {
                let started = Instant::now();
                assert!(!wait_readable(&a, Duration::from_micros(200)).unwrap());
                started.elapsed()
            })
            .min()
            .unwrap();
        assert!(
            shortest >= Duration::from_micros(200) && shortest < Duration::from_millis(1),
            "{shortest:?}"
        );
        b.write_all(b"x").unwrap();
        assert!(wait_readable(&a, Duration::from_secs(5)).unwrap());
    }

    #[test]
    fn network_file_systems_are_refused_with_the_database_backends_named() {
        assert_eq!(unshareable_kind(0x6969), Some("NFS"));
        assert_eq!(unshareable_kind(0x6573_5546), Some("FUSE"));
        // ext4 and tmpfs share.
        assert_eq!(unshareable_kind(0xEF53), None);
        assert_eq!(unshareable_kind(0x0102_1994), None);
        let err = refuse_kind(Path::new("/mnt/tokens"), Some("NFS")).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("NFS") && text.contains("postgres://") && text.contains("mysql://"),
            "{text}"
        );
        let here = tempfile::tempdir().unwrap();
        check_shareable(here.path()).expect("the test's temp dir is local");
    }

    #[test]
    fn a_long_store_path_gets_a_short_socket_address() {
        let short = SocketAddress::of(Path::new("/tmp/tokens")).unwrap();
        assert_eq!(short.address, Path::new("/tmp/tokens/tokenstore.sock"));
        let here = tempfile::tempdir().unwrap();
        let long = here.path().join("x".repeat(150));
        std::fs::create_dir(&long).unwrap();
        let addr = SocketAddress::of(&long).unwrap();
        assert!(addr.address.as_os_str().len() <= SUN_PATH_MAX);
        assert_eq!(addr.file, long.join(SOCKET_FILE));
        let listener = std::os::unix::net::UnixListener::bind(&addr.address).unwrap();
        assert!(addr.file.exists(), "bound inside the store directory");
        let client = UnixStream::connect(&addr.address).unwrap();
        let _ = listener.accept().unwrap();
        assert_eq!(peer(&client).unwrap().uid, my_uid());
        assert_eq!(peer(&client).unwrap().pid, std::process::id());
    }

    #[test]
    fn a_store_of_another_user_is_refused() {
        let here = tempfile::tempdir().unwrap();
        check_owner(here.path()).expect("our own directory");
        if my_uid() != 0 {
            eprintln!("SKIPPED a_store_of_another_user_is_refused: needs root to chown");
            return;
        }
        let theirs = here.path().join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        std::os::unix::fs::chown(&theirs, Some(65534), None).unwrap();
        let err = check_owner(&theirs).unwrap_err().to_string();
        assert!(err.contains("belongs to uid 65534"), "{err}");
    }

    #[test]
    fn this_process_lives_and_a_reaped_one_does_not() {
        assert!(alive(std::process::id()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!alive(pid));
    }
}

//! Hardening of the tinygate process itself: the memory lock that turns "no
//! executable memory" from a property of the code into a rule the kernel
//! enforces.
//!
//! tinygate runs plugins in the wasmi interpreter, so it never needs a page
//! that is written and then executed, the way a JIT does. On Linux 6.3 and
//! later `prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN)` makes that permanent
//! for the process: from then on no mapping can be created writable and
//! executable, and no existing mapping can gain execute permission
//! (`mprotect` fails with `EACCES`). The lock cannot be undone and covers
//! every thread of the process, so `main` takes it once, after the configuration
//! is read and before any plugin is compiled or worker started. This module
//! knows nothing about configuration, plugins or sockets; `main` decides
//! whether to call it (`tinygate.deny_exec_memory`) and what to log.

/// Locks the process so that no memory mapping can ever become executable
/// again (except file mappings that are executable from the start, such as
/// the binary's own code), then reads the setting back to confirm it.
///
/// # Errors
///
/// A message saying why the lock is not on: the kernel is older than 6.3
/// and lacks `PR_SET_MDWE`, the call was refused, or the target OS is not
/// Linux.
#[cfg(target_os = "linux")]
pub fn deny_exec_memory() -> Result<(), String> {
    let refuse = libc::c_ulong::from(libc::PR_MDWE_REFUSE_EXEC_GAIN);
    if let Err(e) = prctl(libc::PR_SET_MDWE, refuse) {
        // Kernels before 6.3 do not know the option and answer EINVAL, and
        // so does qemu-user, which does not pass it on to the host kernel.
        return Err(if e.raw_os_error() == Some(libc::EINVAL) {
            "the kernel lacks PR_SET_MDWE (Linux 6.3 or later has it; qemu-user does not pass it on)"
                .to_string()
        } else {
            format!("prctl(PR_SET_MDWE) failed: {e}")
        });
    }
    match prctl(libc::PR_GET_MDWE, 0) {
        Ok(flags) if flags as libc::c_ulong & refuse != 0 => Ok(()),
        Ok(flags) => Err(format!(
            "PR_GET_MDWE reports flags {flags:#x} after PR_SET_MDWE: the lock is not on"
        )),
        Err(e) => Err(format!("prctl(PR_GET_MDWE) failed: {e}")),
    }
}

/// Where there is no `PR_SET_MDWE` there is no lock to take; tinygate still
/// never maps executable memory itself.
///
/// # Errors
///
/// Always: the lock is Linux-only.
#[cfg(not(target_os = "linux"))]
pub fn deny_exec_memory() -> Result<(), String> {
    Err("not supported on this OS".to_string())
}

/// `prctl(option, arg2, 0, 0, 0)`: the return value, or `errno`.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn prctl(option: libc::c_int, arg2: libc::c_ulong) -> std::io::Result<libc::c_int> {
    let zero: libc::c_ulong = 0;
    // SAFETY: PR_SET_MDWE and PR_GET_MDWE take only integer arguments (all
    // passed as c_ulong, as the variadic C prototype expects); the kernel
    // reads and writes no memory of this process for them.
    let ret = unsafe { libc::prctl(option, arg2, zero, zero, zero) };
    if ret < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::process::Command;

    /// Set in the child process that takes the lock, so that the lock (which
    /// is permanent) never applies to the test binary running other tests.
    const CHILD: &str = "TINYGATE_HARDENING_CHILD";
    const NAME: &str = "ops::hardening::tests::lock_refuses_to_make_memory_executable";

    /// The lock, taken in a child copy of this test binary, makes the kernel
    /// refuse a writable+executable mapping and refuse `mprotect` adding
    /// execute permission to writable memory, which is what a JIT does.
    #[test]
    fn lock_refuses_to_make_memory_executable() {
        if std::env::var_os(CHILD).is_some() {
            locked_child();
            return;
        }
        let out = Command::new(std::env::current_exe().expect("test binary path"))
            .args([NAME, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD, "1")
            .output()
            .expect("run the test binary again");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{text}");
        assert!(text.contains("1 passed"), "{text}");
        assert!(
            text.contains("mdwe-child: locked") || text.contains("mdwe-child: kernel lacks"),
            "{text}"
        );
    }

    #[allow(unsafe_code)]
    fn locked_child() {
        match super::deny_exec_memory() {
            Ok(()) => println!("mdwe-child: locked"),
            Err(e) if e.contains("lacks PR_SET_MDWE") => {
                // Nothing to check on a kernel without the lock.
                println!("mdwe-child: kernel lacks PR_SET_MDWE");
                return;
            }
            Err(e) => panic!("{e}"),
        }
        let len = 4096;
        let (rw, rwx) = (
            libc::PROT_READ | libc::PROT_WRITE,
            libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
        );
        let anon = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
        // SAFETY: a fresh anonymous mapping chosen by the kernel; it aliases
        // no Rust memory and is only passed back to mmap/mprotect/munmap.
        unsafe {
            let p = libc::mmap(std::ptr::null_mut(), len, rwx, anon, -1, 0);
            let errno = std::io::Error::last_os_error().raw_os_error();
            assert_eq!(p, libc::MAP_FAILED, "a W+X mapping was allowed");
            assert_eq!(errno, Some(libc::EACCES));

            let p = libc::mmap(std::ptr::null_mut(), len, rw, anon, -1, 0);
            assert_ne!(p, libc::MAP_FAILED, "a plain RW mapping must work");
            let ret = libc::mprotect(p, len, libc::PROT_READ | libc::PROT_EXEC);
            let errno = std::io::Error::last_os_error().raw_os_error();
            assert_eq!(ret, -1, "RW memory was made executable");
            assert_eq!(errno, Some(libc::EACCES));
            libc::munmap(p, len);
        }
    }
}

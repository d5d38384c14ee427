//! The WASI preview1 surface plugins import (`wasi_snapshot_preview1`, and
//! the same functions as `wasi_unstable`), with the behaviour of cpp-host and
//! Kong (see the ABI notes §2.4).
//!
//! Real: `fd_write` to the log (stdout at info, stderr at error, a record
//! per line: `output.rs`),
//! `proc_exit` (a wasmi `i32_exit` trap that `vm.rs` interprets), clocks,
//! `random_get` from the OS CSPRNG, the plugin's configured environment
//! (never the host's), empty `args`, `sched_yield`, and a `poll_oneoff` that
//! reports no events. Everything touching files or sockets is a stub
//! returning the errno cpp-host returns. This is written by hand on
//! purpose: `wasmi_wasi` would bring in wasi-common and wiggle, and a plugin
//! must not reach the filesystem anyway.
//!
//! Bad pointers are `FAULT` here, not proxy-wasm's INVALID_MEMORY_ACCESS.

use std::sync::LazyLock;
use std::time::Instant;

use wasmi::Caller;

use crate::wasm::abi::{HostFn, HostFuncs, Outcome};
use crate::wasm::host::{HostError, HostState};
use crate::wasm::types::{Errno, Status};
use crate::wasm::{memory, output};

/// The two import modules WASI functions are defined under.
pub(crate) const MODULES: [&str; 2] = ["wasi_snapshot_preview1", "wasi_unstable"];

/// Largest `random_get` request (cpp-host `limits.h`).
pub(crate) const MAX_RANDOM_BYTES: u32 = 64 * 1024;

/// Most bytes of one `fd_write` that reach the log.
const MAX_LOGGED_WRITE: usize = output::MAX_LINE;

const STDOUT: u32 = 1;
const STDERR: u32 = 2;
/// `rights_base` reported for stdout and stderr: `FD_WRITE`.
const RIGHT_FD_WRITE: u64 = 64;

/// Why a WASI function did not succeed.
enum WasiError {
    Errno(Errno),
    Trap(wasmi::Error),
}

impl From<Errno> for WasiError {
    fn from(errno: Errno) -> Self {
        WasiError::Errno(errno)
    }
}

impl From<Status> for WasiError {
    fn from(status: Status) -> Self {
        WasiError::Errno(status.into())
    }
}

impl From<HostError> for WasiError {
    fn from(error: HostError) -> Self {
        match error {
            HostError::Status(status) => status.into(),
            HostError::Trap(trap) => WasiError::Trap(trap),
        }
    }
}

type WasiResult = Result<(), WasiError>;

/// The boundary: charges the base fuel, runs the body, returns the errno.
impl Outcome for WasiResult {
    fn run(
        caller: &mut Caller<'_, HostState>,
        body: impl FnOnce(&mut Caller<'_, HostState>) -> WasiResult,
    ) -> Result<u32, wasmi::Error> {
        let result = memory::charge(caller, 0)
            .map_err(WasiError::from)
            .and_then(|()| body(caller));
        match result {
            Ok(()) => Ok(Errno::SUCCESS.0),
            Err(WasiError::Errno(errno)) => Ok(errno.0),
            Err(WasiError::Trap(trap)) => Err(trap),
        }
    }
}

/// `wasi_fn!(funcs, name(arg: ty, ...))` defines `name` under both WASI
/// module names as `self::name(&mut caller, arg, ...)` (the argument names
/// document the table; only the types are used).
macro_rules! wasi_fn {
    ($funcs:expr, $name:ident ( $($arg:ident : $ty:ty),* $(,)? )) => {
        for module in MODULES {
            HostFn::define_in(
                $name as fn(&mut Caller<'_, HostState>, $($ty),*) -> WasiResult,
                $funcs,
                module,
                stringify!($name),
            );
        }
    };
}

/// `wasi_stub!(funcs, errno, name(ty, ...))` defines `name` as returning
/// `errno` without looking at its arguments.
macro_rules! wasi_stub {
    ($funcs:expr, $errno:expr, $name:ident ( $($ty:ty),* )) => {{
        #[allow(clippy::too_many_arguments)] // the WASI signature
        fn $name(_: &mut Caller<'_, HostState>, $(_: $ty),*) -> WasiResult {
            Err($errno.into())
        }
        for module in MODULES {
            HostFn::define_in(
                $name as fn(&mut Caller<'_, HostState>, $($ty),*) -> WasiResult,
                $funcs,
                module,
                stringify!($name),
            );
        }
    }};
}

/// Defines all of WASI preview1 under both module names, group by group.
pub(crate) fn add_to_linker(funcs: &mut HostFuncs<'_>) {
    add_process(funcs);
    add_clocks_and_scheduling(funcs);
    add_file_descriptors(funcs);
    add_paths_and_sockets(funcs);
}

/// `proc_exit`, the arguments and the environment.
fn add_process(funcs: &mut HostFuncs<'_>) {
    for module in MODULES {
        funcs.define(
            module,
            "proc_exit",
            |_: Caller<'_, HostState>, code: u32| -> Result<(), wasmi::Error> {
                Err(wasmi::Error::i32_exit(code as i32))
            },
        );
    }
    // Arguments and environment.
    wasi_fn!(funcs, args_sizes_get(argc_ptr: u32, argv_buf_size_ptr: u32));
    wasi_fn!(funcs, args_get(argv_ptr: u32, argv_buf_ptr: u32));
    wasi_fn!(funcs, environ_sizes_get(count_ptr: u32, buf_size_ptr: u32));
    wasi_fn!(funcs, environ_get(environ_ptr: u32, environ_buf_ptr: u32));
}

/// Clocks, randomness, scheduling and signals.
fn add_clocks_and_scheduling(funcs: &mut HostFuncs<'_>) {
    wasi_fn!(funcs, clock_res_get(clock_id: u32, ret_ptr: u32));
    wasi_fn!(funcs, clock_time_get(clock_id: u32, precision: u64, ret_ptr: u32));
    wasi_fn!(funcs, random_get(buf_ptr: u32, buf_len: u32));
    wasi_fn!(funcs, sched_yield());
    wasi_fn!(funcs, poll_oneoff(in_ptr: u32, out_ptr: u32, nsubscriptions: u32, ret_nevents_ptr: u32));
    wasi_stub!(funcs, Errno::NOTSUP, proc_raise(u32));
}

/// File descriptors: only stdout and stderr exist.
fn add_file_descriptors(funcs: &mut HostFuncs<'_>) {
    wasi_fn!(funcs, fd_write(fd: u32, iovs_ptr: u32, iovs_len: u32, ret_nwritten_ptr: u32));
    wasi_fn!(funcs, fd_pwrite(fd: u32, iovs_ptr: u32, iovs_len: u32, offset: u64, ret_nwritten_ptr: u32));
    wasi_fn!(funcs, fd_fdstat_get(fd: u32, ret_stat_ptr: u32));
    wasi_fn!(funcs, fd_tell(fd: u32, ret_offset_ptr: u32));
    wasi_fn!(funcs, fd_fdstat_set_rights(fd: u32, rights_base: u64, rights_inheriting: u64));
    wasi_fn!(funcs, fd_advise(fd: u32, offset: u64, len: u64, advice: u32));
    wasi_fn!(funcs, fd_allocate(fd: u32, offset: u64, len: u64));
    wasi_fn!(funcs, fd_datasync(fd: u32));
    wasi_fn!(funcs, fd_sync(fd: u32));
    wasi_fn!(funcs, fd_filestat_set_size(fd: u32, size: u64));
    wasi_fn!(funcs, fd_filestat_set_times(fd: u32, atim: u64, mtim: u64, fst_flags: u32));
    wasi_stub!(funcs, Errno::NOSYS, fd_read(u32, u32, u32, u32));
    wasi_stub!(funcs, Errno::NOSYS, fd_pread(u32, u32, u32, u64, u32));
    wasi_stub!(funcs, Errno::BADF, fd_seek(u32, u64, u32, u32));
    wasi_stub!(funcs, Errno::BADF, fd_close(u32));
    wasi_stub!(funcs, Errno::BADF, fd_prestat_get(u32, u32));
    wasi_stub!(funcs, Errno::NOSYS, fd_prestat_dir_name(u32, u32, u32));
    wasi_stub!(funcs, Errno::BADF, fd_filestat_get(u32, u32));
    wasi_stub!(funcs, Errno::NOSYS, fd_fdstat_set_flags(u32, u32));
    wasi_stub!(funcs, Errno::NOTDIR, fd_readdir(u32, u32, u32, u64, u32));
    wasi_stub!(funcs, Errno::NOTSUP, fd_renumber(u32, u32));
}

/// Paths and sockets: stubs, as there is no filesystem and no network.
fn add_paths_and_sockets(funcs: &mut HostFuncs<'_>) {
    wasi_stub!(
        funcs,
        Errno::NOENT,
        path_open(u32, u32, u32, u32, u32, u64, u64, u32, u32)
    );
    wasi_stub!(
        funcs,
        Errno::NOTSUP,
        path_filestat_get(u32, u32, u32, u32, u32)
    );
    wasi_stub!(
        funcs,
        Errno::NOTSUP,
        path_filestat_set_times(u32, u32, u32, u32, u64, u64, u32)
    );
    wasi_stub!(funcs, Errno::NOTSUP, path_create_directory(u32, u32, u32));
    wasi_stub!(
        funcs,
        Errno::NOTSUP,
        path_link(u32, u32, u32, u32, u32, u32, u32)
    );
    wasi_stub!(
        funcs,
        Errno::NOTSUP,
        path_readlink(u32, u32, u32, u32, u32, u32)
    );
    wasi_stub!(funcs, Errno::NOTSUP, path_remove_directory(u32, u32, u32));
    wasi_stub!(
        funcs,
        Errno::NOTSUP,
        path_rename(u32, u32, u32, u32, u32, u32)
    );
    wasi_stub!(funcs, Errno::NOTSUP, path_symlink(u32, u32, u32, u32, u32));
    wasi_stub!(funcs, Errno::NOTSUP, path_unlink_file(u32, u32, u32));
    // Sockets: none.
    wasi_stub!(funcs, Errno::NOTSUP, sock_accept(u32, u32, u32));
    wasi_stub!(
        funcs,
        Errno::NOTSUP,
        sock_recv(u32, u32, u32, u32, u32, u32)
    );
    wasi_stub!(funcs, Errno::NOTSUP, sock_send(u32, u32, u32, u32, u32));
    wasi_stub!(funcs, Errno::NOTSUP, sock_shutdown(u32, u32));
}

fn args_sizes_get(
    caller: &mut Caller<'_, HostState>,
    argc_ptr: u32,
    argv_buf_size_ptr: u32,
) -> WasiResult {
    memory::check(caller, &[(argc_ptr, 4), (argv_buf_size_ptr, 4)])?;
    memory::write_u32(caller, argc_ptr, 0)?;
    Ok(memory::write_u32(caller, argv_buf_size_ptr, 0)?)
}

fn args_get(_caller: &mut Caller<'_, HostState>, _argv_ptr: u32, _argv_buf_ptr: u32) -> WasiResult {
    Ok(()) // there are no arguments to write
}

fn environ_sizes_get(
    caller: &mut Caller<'_, HostState>,
    count_ptr: u32,
    buf_size_ptr: u32,
) -> WasiResult {
    let (count, size) = {
        let env = &caller.data().plugin.spec.env;
        (
            env.len(),
            env.iter()
                .map(|(k, v)| k.len() + 1 + v.len() + 1)
                .sum::<usize>(),
        )
    };
    let count = u32::try_from(count).map_err(|_| Errno::INVAL)?;
    let size = u32::try_from(size).map_err(|_| Errno::INVAL)?;
    memory::check(caller, &[(count_ptr, 4), (buf_size_ptr, 4)])?;
    memory::write_u32(caller, count_ptr, count)?;
    Ok(memory::write_u32(caller, buf_size_ptr, size)?)
}

/// Writes `KEY=VALUE\0` strings at `environ_buf_ptr` and a pointer to each
/// at `environ_ptr`, sized as `environ_sizes_get` reported.
fn environ_get(
    caller: &mut Caller<'_, HostState>,
    environ_ptr: u32,
    environ_buf_ptr: u32,
) -> WasiResult {
    let strings: Vec<Vec<u8>> = caller
        .data()
        .plugin
        .spec
        .env
        .iter()
        .map(|(k, v)| [k.as_bytes(), b"=", v.as_bytes(), b"\0"].concat())
        .collect();
    let table_len = u32::try_from(strings.len() * 4).map_err(|_| Errno::INVAL)?;
    let buf: Vec<u8> = strings.concat();
    let buf_len = u32::try_from(buf.len()).map_err(|_| Errno::INVAL)?;
    memory::check(
        caller,
        &[(environ_ptr, table_len), (environ_buf_ptr, buf_len)],
    )?;
    // Both ranges are inside memory, so these offsets cannot overflow.
    let mut offset = environ_buf_ptr;
    for (i, s) in strings.iter().enumerate() {
        memory::write_u32(caller, environ_ptr + 4 * i as u32, offset)?;
        offset += s.len() as u32;
    }
    Ok(memory::write(caller, environ_buf_ptr, &buf)?)
}

fn clock_res_get(caller: &mut Caller<'_, HostState>, clock_id: u32, ret_ptr: u32) -> WasiResult {
    match clock_id {
        0 | 1 => Ok(memory::write_u64(caller, ret_ptr, 1)?),
        _ => Err(Errno::NOTSUP.into()),
    }
}

fn clock_time_get(
    caller: &mut Caller<'_, HostState>,
    clock_id: u32,
    _precision: u64,
    ret_ptr: u32,
) -> WasiResult {
    static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);
    let now = match clock_id {
        0 => crate::wasm::abi::unix_nanos(),
        1 => u64::try_from(EPOCH.elapsed().as_nanos()).unwrap_or(u64::MAX),
        _ => return Err(Errno::NOTSUP.into()),
    };
    Ok(memory::write_u64(caller, ret_ptr, now)?)
}

fn random_get(caller: &mut Caller<'_, HostState>, buf_ptr: u32, buf_len: u32) -> WasiResult {
    if buf_len > MAX_RANDOM_BYTES {
        return Err(Errno::INVAL.into());
    }
    memory::check(caller, &[(buf_ptr, buf_len)])?;
    memory::charge(caller, buf_len as usize)?;
    let mut bytes = vec![0u8; buf_len as usize];
    let mut filled = 0;
    while filled < bytes.len() {
        match rustix::rand::getrandom(&mut bytes[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(n) if n > 0 => filled += n,
            Err(rustix::io::Errno::INTR) => continue,
            Ok(_) | Err(_) => return Err(Errno::IO.into()),
        }
    }
    Ok(memory::write(caller, buf_ptr, &bytes)?)
}

fn sched_yield(_caller: &mut Caller<'_, HostState>) -> WasiResult {
    Ok(())
}

/// Reports that no event fired: the Go runtime needs SUCCESS here (cpp-host
/// issue #497). A plugin that sleeps therefore spins, and runs out of fuel.
fn poll_oneoff(
    caller: &mut Caller<'_, HostState>,
    _in_ptr: u32,
    _out_ptr: u32,
    _nsubscriptions: u32,
    ret_nevents_ptr: u32,
) -> WasiResult {
    Ok(memory::write_u32(caller, ret_nevents_ptr, 0)?)
}

fn fd_write(
    caller: &mut Caller<'_, HostState>,
    fd: u32,
    iovs_ptr: u32,
    iovs_len: u32,
    ret_nwritten_ptr: u32,
) -> WasiResult {
    let stream = match fd {
        STDOUT => output::Stream::Stdout,
        STDERR => output::Stream::Stderr,
        _ => return Err(Errno::BADF.into()),
    };
    let table_len = iovs_len.checked_mul(8).ok_or(Errno::FAULT)?;
    memory::check(caller, &[(iovs_ptr, table_len), (ret_nwritten_ptr, 4)])?;
    let (total, text) = gather(caller, iovs_ptr, iovs_len)?;
    memory::charge(caller, text.len() + table_len as usize)?;
    let nwritten = u32::try_from(total).map_err(|_| Errno::INVAL)?;
    // One log record per line, whatever pieces it is written in.
    output::write(caller.data_mut(), stream, &text, total > text.len() as u64);
    Ok(memory::write_u32(caller, ret_nwritten_ptr, nwritten)?)
}

/// `fd_pwrite` on a stream ignores the offset: the same as `fd_write`.
fn fd_pwrite(
    caller: &mut Caller<'_, HostState>,
    fd: u32,
    iovs_ptr: u32,
    iovs_len: u32,
    _offset: u64,
    ret_nwritten_ptr: u32,
) -> WasiResult {
    fd_write(caller, fd, iovs_ptr, iovs_len, ret_nwritten_ptr)
}

/// The bytes of an iovec array (at most `MAX_LOGGED_WRITE` of them kept) and
/// their total length; every buffer is bounds-checked.
fn gather(
    caller: &Caller<'_, HostState>,
    iovs_ptr: u32,
    iovs_len: u32,
) -> Result<(u64, Vec<u8>), WasiError> {
    let mem = memory::memory(caller)?;
    let bytes = mem.data(caller);
    let mut total = 0u64;
    let mut text = Vec::new();
    for i in 0..iovs_len {
        let entry = iovs_ptr + 8 * i; // inside the checked table
        let buf = memory::get_u32(bytes, entry)?;
        let len = memory::get_u32(bytes, entry + 4)?;
        let data = memory::slice(bytes, buf, len)?;
        total += u64::from(len);
        let room = MAX_LOGGED_WRITE.saturating_sub(text.len());
        text.extend_from_slice(&data[..data.len().min(room)]);
    }
    Ok((total, text))
}

fn fd_fdstat_get(caller: &mut Caller<'_, HostState>, fd: u32, ret_stat_ptr: u32) -> WasiResult {
    std_stream(fd)?;
    // fdstat: filetype u8, flags u16, rights_base u64 @8, rights_inheriting u64 @16.
    let mut stat = [0u8; 24];
    stat[8..16].copy_from_slice(&RIGHT_FD_WRITE.to_le_bytes());
    Ok(memory::write(caller, ret_stat_ptr, &stat)?)
}

fn fd_tell(caller: &mut Caller<'_, HostState>, fd: u32, ret_offset_ptr: u32) -> WasiResult {
    std_stream(fd)?;
    Ok(memory::write_u64(caller, ret_offset_ptr, 0)?)
}

fn fd_fdstat_set_rights(
    _caller: &mut Caller<'_, HostState>,
    fd: u32,
    _rights_base: u64,
    _rights_inheriting: u64,
) -> WasiResult {
    std_stream(fd)
}

fn fd_advise(
    _caller: &mut Caller<'_, HostState>,
    fd: u32,
    _offset: u64,
    _len: u64,
    _advice: u32,
) -> WasiResult {
    std_stream(fd)
}

fn fd_allocate(
    _caller: &mut Caller<'_, HostState>,
    fd: u32,
    _offset: u64,
    _len: u64,
) -> WasiResult {
    std_stream(fd)
}

fn fd_datasync(_caller: &mut Caller<'_, HostState>, fd: u32) -> WasiResult {
    std_stream(fd)
}

fn fd_sync(_caller: &mut Caller<'_, HostState>, fd: u32) -> WasiResult {
    std_stream(fd)
}

fn fd_filestat_set_size(_caller: &mut Caller<'_, HostState>, fd: u32, _size: u64) -> WasiResult {
    std_stream(fd)
}

fn fd_filestat_set_times(
    _caller: &mut Caller<'_, HostState>,
    fd: u32,
    _atim: u64,
    _mtim: u64,
    _fst_flags: u32,
) -> WasiResult {
    std_stream(fd)
}

/// SUCCESS for stdout and stderr, BADF for any other descriptor.
fn std_stream(fd: u32) -> WasiResult {
    match fd {
        STDOUT | STDERR => Ok(()),
        _ => Err(Errno::BADF.into()),
    }
}

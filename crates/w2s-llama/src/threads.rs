//! The CPU threads llama.cpp's CPU backend computes with. Built with OpenMP (as w2s builds
//! it), the backend starts a team of helper threads for each OS thread that runs a
//! forward pass, and the team stays after the pass. Once more threads are in teams than
//! the machine has CPUs, libgomp stops spinning between parallel regions and every
//! region waits on a wake-up: with 8 server workers each keeping its team after a burst
//! of requests, a lone search then took 1.20x its time (docs/server.md).

use std::sync::OnceLock;

/// `omp_pause_resource_all(omp_pause_soft)`, where the process has OpenMP.
type Pause = unsafe extern "C" fn(std::ffi::c_int) -> std::ffi::c_int;

/// OpenMP's `omp_pause_soft`.
const PAUSE_SOFT: std::ffi::c_int = 1;

fn pause_fn() -> Option<Pause> {
    static PAUSE: OnceLock<Option<Pause>> = OnceLock::new();
    *PAUSE.get_or_init(|| {
        #[cfg(unix)]
        {
            // SAFETY: a lookup by a NUL-terminated name in the loaded objects; the symbol,
            // where present, is OpenMP's `int omp_pause_resource_all(omp_pause_resource_t)`.
            let sym =
                unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"omp_pause_resource_all".as_ptr()) };
            (!sym.is_null())
                .then(|| unsafe { std::mem::transmute::<*mut libc::c_void, Pause>(sym) })
        }
        #[cfg(not(unix))]
        {
            None
        }
    })
}

/// Ends the calling thread's team of CPU helper threads (the next forward pass on this
/// thread starts a new one, which costs tens of microseconds). Call it from a thread
/// that shares the CPU with others taking turns, as it hands the CPU over: then only the
/// thread computing holds a team. Does nothing without OpenMP, or inside a parallel
/// region.
pub fn release_cpu_threads() {
    if let Some(pause) = pause_fn() {
        // SAFETY: called outside any parallel region of this thread (the caller has no
        // forward pass running); libgomp then frees this thread's pool only.
        unsafe {
            pause(PAUSE_SOFT);
        }
    }
}

//! glibc's allocator, set up for a process whose load is bursts of large
//! request bodies. Its defaults keep a burst's memory: a heap per thread
//! (up to eight per core), and a threshold for giving large blocks their
//! own mapping that rises to 32 MiB as soon as one such block is freed, so
//! later bodies land in the heaps and stay resident. Measured with 64
//! concurrent 3 MiB reviews: the defaults peaked at 52–62 MiB and settled
//! at 19–21 MiB after trimming; these settings peaked at 37–42 MiB and
//! settled at 12.6 MiB, against 9.7 MiB idle (docs/memory.md).

/// Blocks from this size get their own mapping, returned on free.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 256 * 1024;

/// Fixes the allocator's settings. Call before any thread starts: heaps
/// already made are kept. A setting the operator gave through glibc's own
/// environment variables is left as given.
pub fn tune() {
    let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
    tune_with_arenas(cores.max(2));
}

/// [`tune`] with one heap for every thread: for the inventory, whose
/// watches and assessments run on different threads and would otherwise
/// each pin a heap of the other's garbage. Measured with 50,000 pods: 117
/// MiB resident with two heaps, 80 MiB with one (docs/scale.md).
pub fn tune_lean() {
    tune_with_arenas(1);
}

fn tune_with_arenas(arenas: usize) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let arenas = libc::c_int::try_from(arenas).unwrap_or(libc::c_int::MAX);
        if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
            // SAFETY: mallopt only sets glibc's own tunables.
            unsafe { libc::mallopt(libc::M_ARENA_MAX, arenas) };
        }
        if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
            // SAFETY: as above; a fixed threshold also stops it rising.
            unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) };
        }
    }
}

/// Gives freed heap pages back to the system.
pub(crate) fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own heap structures.
    unsafe {
        libc::malloc_trim(0);
    }
}

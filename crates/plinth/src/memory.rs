//! Giving freed memory back to the system. glibc's allocator keeps what a burst of work freed
//! (building the OpenAPI document at start, a load peak) for reuse, so the process's resident
//! size stays at its high-water mark; trimming after start and now and then returns it.

/// Returns the allocator's free memory to the system.
pub fn give_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only releases free pages of the allocator's own heaps; it takes no
    // pointer and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

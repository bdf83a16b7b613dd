use clap::Parser;

/// glibc's malloc raises its mmap threshold after large frees, so the 19 MiB
/// Argon2 buffers end up in per-thread heaps and stay resident (hundreds of
/// MB after a login storm). A fixed threshold keeps them mmap'ed and returned
/// to the system when freed; two arenas bound per-thread heap growth.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it is called once at
    // start-up, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

fn main() -> anyhow::Result<()> {
    tune_allocator();
    actix_web::rt::System::new().block_on(async { storefront::cli::run(storefront::cli::Cli::parse()).await })
}

use clap::Parser;

/// mimalloc: per-thread heaps without glibc's arena locks. In alternating
/// flash-sale runs the server spent ~7% less CPU per order and sold ~5%
/// more (BENCHMARKS.md, session 8).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc.h (v2). Memory freed is returned to
/// the system at once instead of after 10-100 ms: a login storm's 19 MiB
/// Argon2 buffers would otherwise stay resident (84 MB after one, against
/// 41-45 MB with purging at once).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn tune_allocator() {
    // SAFETY: sets an allocator option; called once at start-up.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) }
}

fn main() -> anyhow::Result<()> {
    tune_allocator();
    actix_web::rt::System::new().block_on(async { storefront::cli::run(storefront::cli::Cli::parse()).await })
}

use clap::Parser;

/// mimalloc: per-thread heaps without glibc's arena locks (less CPU per
/// order under a flash sale; see docs/decisions/).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    actix_web::rt::System::new().block_on(async { storefront::cli::run(storefront::cli::Cli::parse()).await })
}

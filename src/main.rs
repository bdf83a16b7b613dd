use clap::Parser;

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    storefront::cli::run(storefront::cli::Cli::parse()).await
}

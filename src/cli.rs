//! The command line: `serve` (default), `migrate`, `healthcheck`, `seed`, `create-admin`.

use std::{sync::Arc, time::Duration};

use actix::Actor;
use clap::{Parser, Subcommand};
use secrecy::ExposeSecret;

use crate::{
    actors::user::{Register, UserActor},
    auth::{JwtKeys, PasswordHasher},
    config::Settings,
    db::{build_pool, migrate},
    domain::{Email, Password, Role, UserName},
    pagination::CursorCodec,
    startup::Application,
    telemetry,
};

#[derive(Debug, Parser)]
#[command(name = "storefront", version, about = "E-commerce REST backend")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate {
        /// Revert every migration instead (destroys all data).
        #[arg(long)]
        revert_all: bool,
    },
    /// Exit 0 when GET /health/live on this machine's server answers 200
    /// (the Docker HEALTHCHECK; needs no curl in the image).
    Healthcheck,
    /// Load demo data: categories, N products and, outside production, a
    /// demo admin and customer with the README's (published) passwords.
    Seed {
        #[arg(long, default_value_t = 1000)]
        products: i64,
        /// Do nothing when the catalog already has products.
        #[arg(long)]
        if_empty: bool,
        /// With APP_ENVIRONMENT=production, create the demo accounts too:
        /// passwords from STOREFRONT_DEMO_ADMIN_PASSWORD and
        /// STOREFRONT_DEMO_CUSTOMER_PASSWORD, or random ones printed once.
        #[arg(long)]
        demo_accounts: bool,
    },
    /// Create an admin account. The password comes from
    /// STOREFRONT_ADMIN_PASSWORD or a prompt.
    CreateAdmin {
        #[arg(long)]
        email: String,
        #[arg(long)]
        name: String,
        /// admin or super_admin.
        #[arg(long, default_value = "admin")]
        role: String,
    },
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let settings = Settings::load()?;
    telemetry::init(&settings.log);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(settings).await,
        Command::Healthcheck => healthcheck(settings.server.port),
        Command::Migrate { revert_all } => {
            let url = settings.database.url.expose_secret();
            let done = if revert_all {
                migrate::revert_all(url).await?
            } else {
                migrate::run_pending(url).await?
            };
            let verb = if revert_all { "reverted" } else { "applied" };
            if done.is_empty() {
                println!("no migrations {verb}; the database is up to date");
            }
            for version in done {
                println!("{verb} {version}");
            }
            Ok(())
        }
        Command::CreateAdmin { email, name, role } => create_admin(settings, &email, &name, &role).await,
        Command::Seed {
            products,
            if_empty,
            demo_accounts,
        } => seed(settings, products, if_empty, demo_accounts).await,
    }
}

async fn seed(settings: Settings, products: i64, if_empty: bool, demo_accounts: bool) -> anyhow::Result<()> {
    use crate::seed::PasswordOrigin;
    let accounts = crate::seed::demo_accounts(settings.environment, demo_accounts, |name| {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    })?;
    let url = settings.database.url.expose_secret();
    migrate::run_pending(url).await?;
    let report = crate::seed::seed(url, products.max(0), if_empty, &accounts).await?;
    if report.skipped {
        println!("catalog already has {} products; nothing seeded", report.products);
        return Ok(());
    }
    println!("seeded {} products in {:.1}s", report.products, report.seconds);
    if accounts.is_empty() {
        println!(
            "no demo accounts (APP_ENVIRONMENT={}; --demo-accounts creates them)",
            settings.environment.as_str()
        );
    }
    for (account, (_, created)) in accounts.iter().zip(&report.accounts) {
        let who = format!("demo account {} ({})", account.email, account.role);
        match (created, account.origin) {
            (false, _) => println!("{who} already exists; its password is unchanged"),
            (true, PasswordOrigin::Published) => println!(
                "{who}: password {} (published in the README: development only)",
                account.password.expose()
            ),
            (true, PasswordOrigin::Environment(variable)) => println!("{who}: password from {variable}"),
            (true, PasswordOrigin::Generated) => println!(
                "{who}: password {} (generated; shown only this once)",
                account.password.expose()
            ),
        }
    }
    Ok(())
}

fn healthcheck(port: u16) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(2),
    )?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.write_all(b"GET /health/live HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    if response.starts_with("HTTP/1.1 200") {
        Ok(())
    } else {
        anyhow::bail!("unhealthy: {}", response.lines().next().unwrap_or(""))
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let app = Application::build(settings).await?;
    app.run_until_stopped().await?;
    Ok(())
}

async fn create_admin(settings: Settings, email: &str, name: &str, role: &str) -> anyhow::Result<()> {
    let role: Role = role.parse().map_err(|e| anyhow::anyhow!("--role {e}"))?;
    if role < Role::Admin {
        anyhow::bail!("--role must be admin or super_admin");
    }
    let email = Email::parse(email).map_err(|e| anyhow::anyhow!("--email {e}"))?;
    let name = UserName::parse(name).map_err(|e| anyhow::anyhow!("--name {e}"))?;
    let raw = match std::env::var("STOREFRONT_ADMIN_PASSWORD") {
        Ok(p) => p,
        Err(_) => rpassword::prompt_password("Password for the new admin: ")?,
    };
    let password = Password::parse(&raw).map_err(|e| anyhow::anyhow!("password {e}"))?;

    let url = settings.database.url.expose_secret().to_owned();
    migrate::run_pending(&url).await?;
    let secret = settings.auth.jwt_secret.expose_secret().as_bytes().to_vec();
    let users = UserActor::new(
        build_pool(
            &url,
            1,
            Duration::from_millis(settings.database.acquire_timeout_ms),
            None,
        ),
        PasswordHasher::new(1),
        Arc::new(JwtKeys::new(
            &settings.auth.jwt_secret,
            &settings.auth.issuer,
            &settings.auth.audience,
            Duration::from_secs(settings.auth.access_ttl_secs),
        )),
        CursorCodec::new(&secret),
        Duration::from_secs(settings.auth.refresh_ttl_secs),
    )
    .start();
    let user = users
        .send(Register {
            email,
            password,
            name,
            role,
        })
        .await?
        .map_err(|e| anyhow::anyhow!("could not create the admin: {e}"))?;
    println!("created {} {} (id {})", user.role, user.email, user.id);
    Ok(())
}

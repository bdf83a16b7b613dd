//! Every down.sql undoes its up.sql: in a database of its own, each migration
//! is applied, reverted and compared with the catalogue before it. And the
//! diesel CLI works on the same folder.

use std::{fs, path::Path, process::Command};

use diesel::{sql_query, Connection, QueryableByName, RunQueryDsl};
use diesel_migrations::MigrationHarness;
use storefront::db::migrate::MIGRATIONS;

use crate::helpers::{blocking, pg_server, SyncConn};

#[derive(QueryableByName, PartialEq, Eq, Debug, PartialOrd, Ord)]
struct Obj {
    #[diesel(sql_type = diesel::sql_types::Text)]
    obj: String,
}

/// Tables, columns, indexes, constraints, functions, triggers and extensions
/// (outside the migrations bookkeeping table).
const CATALOGUE: &str = "
SELECT 'table ' || table_name AS obj FROM information_schema.tables
  WHERE table_schema = 'public' AND table_name <> '__diesel_schema_migrations'
UNION ALL SELECT 'column ' || table_name || '.' || column_name || ' ' || data_type || ' ' || is_nullable || ' ' || coalesce(column_default, '')
  FROM information_schema.columns WHERE table_schema = 'public' AND table_name <> '__diesel_schema_migrations'
UNION ALL SELECT 'index ' || indexname || ' ' || indexdef FROM pg_indexes
  WHERE schemaname = 'public' AND tablename <> '__diesel_schema_migrations'
UNION ALL SELECT 'constraint ' || conname || ' ' || pg_get_constraintdef(c.oid) FROM pg_constraint c
  JOIN pg_namespace n ON n.oid = c.connamespace WHERE n.nspname = 'public' AND conname NOT LIKE '__diesel%'
UNION ALL SELECT 'function ' || p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
  WHERE n.nspname = 'public'
UNION ALL SELECT 'trigger ' || tgname FROM pg_trigger WHERE NOT tgisinternal
UNION ALL SELECT 'extension ' || extname FROM pg_extension
";

fn catalogue(conn: &mut SyncConn) -> Vec<Obj> {
    let mut v: Vec<Obj> = sql_query(CATALOGUE).load(conn).expect("catalogue");
    v.sort();
    v
}

/// Runs `f` with the URL of a database of its own, dropped afterwards (also
/// when `f` panics).
fn in_fresh_database(name: &str, f: impl FnOnce(&str)) {
    let db = format!("storefront_{name}_{}", std::process::id());
    let admin_url = format!("{}/postgres", pg_server());
    let url = format!("{}/{db}", pg_server());
    let (a, d) = (admin_url.clone(), db.clone());
    blocking(move || {
        let mut admin = SyncConn::establish(&a).expect("connect");
        sql_query(format!("DROP DATABASE IF EXISTS {d} WITH (FORCE)"))
            .execute(&mut admin)
            .expect("drop");
        sql_query(format!("CREATE DATABASE {d}"))
            .execute(&mut admin)
            .expect("create");
    });
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&url)));
    blocking(move || {
        let mut admin = SyncConn::establish(&admin_url).expect("connect");
        let _ = sql_query(format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).execute(&mut admin);
    });
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

#[test]
fn every_down_undoes_its_up() {
    in_fresh_database("mig", |url| {
        let url = url.to_owned();
        blocking(move || {
            let mut conn = SyncConn::establish(&url).expect("connect");
            let mut steps = 0;
            loop {
                let before = catalogue(&mut conn);
                let pending = conn.pending_migrations(MIGRATIONS).expect("pending");
                if pending.is_empty() {
                    break;
                }
                conn.run_next_migration(MIGRATIONS).expect("up");
                let after = catalogue(&mut conn);
                assert_ne!(before, after, "migration {steps} changed nothing");
                conn.revert_last_migration(MIGRATIONS).expect("down");
                assert_eq!(
                    before,
                    catalogue(&mut conn),
                    "down of migration {steps} did not undo its up"
                );
                conn.run_next_migration(MIGRATIONS).expect("up again");
                steps += 1;
            }
            assert!(steps >= 4, "{steps} migrations");
            // And all the way down leaves nothing behind.
            conn.revert_all_migrations(MIGRATIONS).expect("revert all");
            let left: Vec<Obj> = catalogue(&mut conn)
                .into_iter()
                .filter(|o| !o.obj.starts_with("extension plpgsql"))
                .collect();
            assert!(left.is_empty(), "{left:?}");
        })
    });
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("mkdir");
    for entry in fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), target).expect("copy");
        }
    }
}

/// Developers' diesel CLI on the same migrations. In a copy of `diesel.toml`
/// and `migrations/`: `diesel migration run` applies every migration and
/// regenerates `src/db/schema.rs` exactly as committed; `diesel migration
/// redo --all` runs every down.sql and up.sql again and regenerates it the
/// same; the server's embedded migrations then find nothing pending.
/// Skipped without the CLI, unless STOREFRONT_REQUIRE_DIESEL is set.
#[test]
fn the_diesel_cli_runs_the_migrations_and_regenerates_schema_rs() {
    let Some(diesel) = std::env::var_os("STOREFRONT_DIESEL") else {
        crate::helpers::tool_missing(
            "STOREFRONT_REQUIRE_DIESEL",
            "STOREFRONT_DIESEL is not set: scripts/test.sh installs diesel_cli 2.3.14 from crates.io \
             (it links libpq: sudo apt-get install -y libpq-dev) and sets it, or `cargo install diesel_cli \
             --version =2.3.14 --no-default-features --features postgres` and point STOREFRONT_DIESEL at it",
        );
        return;
    };
    let project = Path::new(env!("CARGO_MANIFEST_DIR"));
    let committed = fs::read_to_string(project.join("src/db/schema.rs")).expect("schema.rs");
    let work = TempDir(std::env::temp_dir().join(format!("storefront-diesel-{}", std::process::id())));
    let work = &work.0;
    copy_dir(&project.join("migrations"), &work.join("migrations"));
    fs::create_dir_all(work.join("src/db")).expect("mkdir");
    fs::copy(project.join("diesel.toml"), work.join("diesel.toml")).expect("copy");
    let migrations = fs::read_dir(project.join("migrations"))
        .expect("migrations")
        .count();
    in_fresh_database("diesel", |url| {
        let diesel = |args: &[&str]| {
            let out = Command::new(&diesel)
                .args(args)
                .args(["--database-url", url])
                .current_dir(work)
                .output()
                .expect("run the diesel CLI");
            let (stdout, stderr) = (
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr),
            );
            assert!(out.status.success(), "diesel {args:?}: {stdout}{stderr}");
            stdout
        };
        let regenerated =
            || fs::read_to_string(work.join("src/db/schema.rs")).expect("regenerated schema.rs");

        diesel(&["migration", "run"]);
        assert!(
            regenerated() == committed,
            "`diesel migration run` regenerated another schema.rs:\n{}",
            regenerated()
        );
        fs::remove_file(work.join("src/db/schema.rs")).expect("rm");
        diesel(&["migration", "redo", "--all"]);
        assert!(
            regenerated() == committed,
            "`diesel migration redo --all` regenerated another schema.rs:\n{}",
            regenerated()
        );
        let list = diesel(&["migration", "list"]);
        assert_eq!(list.matches("[X]").count(), migrations, "{list}");
        assert!(!list.contains("[ ]"), "{list}");

        let url = url.to_owned();
        blocking(move || {
            let mut conn = SyncConn::establish(&url).expect("connect");
            let pending = conn.pending_migrations(MIGRATIONS).expect("pending");
            assert!(
                pending.is_empty(),
                "{} pending after the CLI ran them all",
                pending.len()
            );
        });
    });
}

/// A directory removed when dropped, panic or not.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[actix_web::test]
async fn migrations_are_safe_to_run_from_many_instances_at_once() {
    let db = crate::helpers::TestDb::new();
    let runs = (0..4).map(|_| storefront::db::migrate::run_pending(&db.url));
    let results = futures_util::future::join_all(runs).await;
    let applied: usize = results.into_iter().map(|r| r.expect("migrate").len()).sum();
    assert_eq!(applied, MIGRATIONS_COUNT);
    assert_eq!(
        db.texts("SELECT count(*)::text AS name FROM __diesel_schema_migrations"),
        [MIGRATIONS_COUNT.to_string()]
    );
}

const MIGRATIONS_COUNT: usize = 16;

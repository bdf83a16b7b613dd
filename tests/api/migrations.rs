//! Every down.sql undoes its up.sql: in a database of its own, each migration
//! is applied, reverted and compared with the catalogue before it.

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

#[test]
fn every_down_undoes_its_up() {
    let db = format!("storefront_mig_{}", std::process::id());
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
    let result = std::panic::catch_unwind(|| {
        let url = url.clone();
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
    blocking(move || {
        let mut admin = SyncConn::establish(&admin_url).expect("connect");
        let _ = sql_query(format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).execute(&mut admin);
    });
    if let Err(e) = result {
        std::panic::resume_unwind(e);
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

const MIGRATIONS_COUNT: usize = 11;

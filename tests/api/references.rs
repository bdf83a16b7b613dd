//! The references of orders and order items (migration 000010): checked once
//! per statement instead of by per-row foreign keys, with the foreign keys'
//! rules — for any writer, not only storefront.

use std::time::Duration;

use diesel::{connection::SimpleConnection, result::Error as DieselError, Connection};

use crate::helpers::{blocking, SyncConn, TestDb};

/// A migrated schema with users 1 and 2, product 1, and order 1 (user 1)
/// with one item.
async fn shop() -> TestDb {
    let db = TestDb::new();
    storefront::db::migrate::run_pending(&db.url)
        .await
        .expect("migrate");
    db.batch(
        "INSERT INTO users (id, email, name) VALUES (1, 'a@x.test', 'A'), (2, 'b@x.test', 'B');
         INSERT INTO products (id, name, price, stock_quantity) VALUES (1, 'P', 10, 5), (2, 'Q', 10, 5);
         INSERT INTO orders (id, user_id, total_amount) VALUES (1, 1, 10);
         INSERT INTO order_items (order_id, product_id, quantity, unit_price) VALUES (1, 1, 1, 10);
         SELECT setval('users_id_seq', 100), setval('products_id_seq', 100), setval('orders_id_seq', 100);",
    );
    db
}

/// Runs `sql` (one or more statements) on a new connection; the error's
/// SQLSTATE class and constraint name, or the rows affected by the last.
fn attempt(db: &TestDb, sql: &str) -> Result<(), (String, Option<String>)> {
    let (url, sql) = (db.url.clone(), sql.to_owned());
    blocking(move || {
        let mut conn = SyncConn::establish(&url).expect("connect");
        run(&mut conn, &sql)
    })
}

fn run(conn: &mut SyncConn, sql: &str) -> Result<(), (String, Option<String>)> {
    conn.batch_execute(sql).map_err(|e| match e {
        DieselError::DatabaseError(kind, info) => (
            format!("{kind:?}: {}", info.message()),
            info.constraint_name().map(str::to_owned),
        ),
        other => (other.to_string(), None),
    })
}

fn fk(constraint: &str) -> impl Fn(&Result<(), (String, Option<String>)>) -> bool + '_ {
    move |r| matches!(r, Err((m, Some(c))) if m.starts_with("ForeignKeyViolation") && c == constraint)
}

#[actix_web::test]
async fn new_rows_must_refer_to_existing_rows() {
    let db = shop().await;
    let user = fk("orders_user_id_fkey");
    let order = fk("order_items_order_id_fkey");
    let product = fk("order_items_product_id_fkey");

    // Many rows at once, one of them wrong: the whole statement fails.
    let r = attempt(
        &db,
        "INSERT INTO orders (user_id, total_amount) VALUES (1, 1), (2, 1), (99, 1)",
    );
    assert!(user(&r), "{r:?}");
    let r = attempt(
        &db,
        "INSERT INTO order_items (order_id, product_id, quantity, unit_price) VALUES (1, 2, 1, 10), (77, 1, 1, 10)",
    );
    assert!(order(&r), "{r:?}");
    let r = attempt(
        &db,
        "INSERT INTO order_items (order_id, product_id, quantity, unit_price) VALUES (1, 2, 1, 10), (1, 88, 1, 10)",
    );
    assert!(product(&r), "{r:?}");
    // Changing a reference to a missing row, row by row.
    assert!(user(&attempt(&db, "UPDATE orders SET user_id = 99 WHERE id = 1")));
    assert!(order(&attempt(&db, "UPDATE order_items SET order_id = 77")));
    assert!(product(&attempt(&db, "UPDATE order_items SET product_id = 88")));
    assert_eq!(db.count_of("SELECT count(*) FROM orders"), 1);
    assert_eq!(db.count_of("SELECT count(*) FROM order_items"), 1);

    // Good rows (an order and its items in one statement, as the inventory
    // batch writes them) go in; so do good reference changes.
    attempt(
        &db,
        "WITH o AS (INSERT INTO orders (id, user_id, total_amount) VALUES (2, 2, 20), (3, 1, 10) RETURNING id)
         INSERT INTO order_items (order_id, product_id, quantity, unit_price)
         SELECT id, 2, 1, 10 FROM o",
    )
    .expect("valid rows");
    attempt(&db, "UPDATE orders SET user_id = 2 WHERE id = 1; UPDATE order_items SET product_id = 2 WHERE order_id = 1")
        .expect("valid changes");
    assert_eq!(
        db.count_of("SELECT count(*) FROM order_items WHERE product_id = 2"),
        3
    );
}

#[actix_web::test]
async fn referenced_rows_cannot_go_while_referenced() {
    let db = shop().await;
    for (sql, constraint) in [
        ("DELETE FROM users WHERE id = 1", "orders_user_id_fkey"),
        ("UPDATE users SET id = 10 WHERE id = 1", "orders_user_id_fkey"),
        ("DELETE FROM products WHERE id = 1", "order_items_product_id_fkey"),
        // (A product's id change is refused by product_search's own key first.)
        (
            "UPDATE orders SET id = 10 WHERE id = 1",
            "order_items_order_id_fkey",
        ),
    ] {
        let r = attempt(&db, sql);
        assert!(fk(constraint)(&r), "{sql}: {r:?}");
    }
    // TRUNCATE: refused unless the referencing table goes too.
    let r = attempt(&db, "TRUNCATE users CASCADE");
    assert!(
        matches!(&r, Err((m, _)) if m.contains("cannot truncate")),
        "{r:?}"
    );
    let r = attempt(&db, "TRUNCATE products CASCADE");
    assert!(
        matches!(&r, Err((m, _)) if m.contains("cannot truncate")),
        "{r:?}"
    );
    assert_eq!(db.count_of("SELECT count(*) FROM users"), 2);
    assert_eq!(db.count_of("SELECT count(*) FROM products"), 2);
    // Rows nothing refers to can go; an order takes its items with it.
    attempt(
        &db,
        "DELETE FROM users WHERE id = 2; DELETE FROM products WHERE id = 2",
    )
    .expect("unreferenced");
    attempt(&db, "DELETE FROM orders WHERE id = 1").expect("delete order");
    assert_eq!(db.count_of("SELECT count(*) FROM order_items"), 0);
    attempt(&db, "DELETE FROM users; DELETE FROM products").expect("nothing refers to them now");
    // At REPEATABLE READ the check could miss newer orders: refused.
    db.batch("INSERT INTO users (id, email, name) VALUES (3, 'c@x.test', 'C')");
    let r = attempt(
        &db,
        "BEGIN ISOLATION LEVEL REPEATABLE READ; DELETE FROM users WHERE id = 3; COMMIT",
    );
    assert!(matches!(&r, Err((m, _)) if m.contains("READ COMMITTED")), "{r:?}");
    attempt(&db, "TRUNCATE users, orders, order_items, products CASCADE").expect("everything at once");
}

/// The check locks what it found FOR KEY SHARE, like a foreign key: a
/// concurrent DELETE of the user waits for the order's transaction and then
/// fails; an order for a user being deleted waits and then fails.
#[actix_web::test]
async fn checks_hold_against_concurrent_deletes() {
    let db = shop().await;
    for (first, second, second_fails_with) in [
        (
            "INSERT INTO orders (user_id, total_amount) VALUES (2, 1)",
            "DELETE FROM users WHERE id = 2",
            "orders_user_id_fkey",
        ),
        (
            "DELETE FROM products WHERE id = 2",
            "INSERT INTO order_items (order_id, product_id, quantity, unit_price) VALUES (1, 2, 1, 10)",
            "order_items_product_id_fkey",
        ),
    ] {
        let url = db.url.clone();
        let (first, second) = (first.to_owned(), second.to_owned());
        let (waited, result) = blocking(move || {
            let mut a = SyncConn::establish(&url).expect("connect");
            run(&mut a, &format!("BEGIN; {first}")).expect("first");
            let url2 = url.clone();
            let other = std::thread::spawn(move || {
                let mut b = SyncConn::establish(&url2).expect("connect");
                let started = std::time::Instant::now();
                let r = run(&mut b, &second);
                (started.elapsed(), r)
            });
            std::thread::sleep(Duration::from_millis(300));
            run(&mut a, "COMMIT").expect("commit");
            other.join().expect("second")
        });
        assert!(waited >= Duration::from_millis(250), "did not wait: {waited:?}");
        assert!(fk(second_fails_with)(&result), "{result:?}");
    }
    assert_eq!(db.count_of("SELECT count(*) FROM users WHERE id = 2"), 1);
    assert_eq!(
        db.count_of("SELECT count(*) FROM order_items WHERE product_id = 2"),
        0
    );
}

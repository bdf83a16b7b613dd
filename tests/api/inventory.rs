//! The InventoryActor under concurrency: no oversell on one instance or two,
//! cancels racing orders, idempotent retries racing each other, and a panic
//! in the middle of a batch.

use std::collections::HashSet;

use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{spawn_app, Res, TestApp};

async fn order(app: &TestApp, token: &str, product: i64, qty: i64) -> Res {
    app.post(
        "/api/v1/orders",
        Some(token),
        json!({"items": [{"product_id": product, "quantity": qty}]}),
    )
    .await
}

fn tally(results: &[Res]) -> (usize, usize, usize) {
    let created = results.iter().filter(|r| r.status == StatusCode::CREATED).count();
    let conflict = results
        .iter()
        .filter(|r| r.status == StatusCode::CONFLICT)
        .count();
    (created, conflict, results.len() - created - conflict)
}

#[actix_web::test]
async fn two_hundred_concurrent_orders_on_fifty_units_sell_exactly_fifty() {
    let app = spawn_app().await;
    let admin = app.user_with_role("admin@example.com", "admin").await.access;
    let product = app.product(&admin, "Hot item", "10.00", 50).await;
    let users = app.bulk_users(200);
    let results = join_all(users.iter().map(|(_, t)| order(&app, t, product, 1))).await;
    let (created, conflict, other) = tally(&results);
    assert_eq!((created, conflict, other), (50, 150, 0));
    for r in results.iter().filter(|r| r.status == StatusCode::CONFLICT) {
        assert_eq!(r.error_fields(), ["items[0].product_id"]);
    }
    assert_eq!(app.stock_of(product), 0);
    assert_eq!(app.count("SELECT count(*) FROM orders"), 50);
    assert_eq!(
        app.count("SELECT coalesce(sum(quantity), 0) FROM order_items"),
        50
    );
    // Every 201 is a distinct order that exists, each with its item.
    let ids: HashSet<i64> = results.iter().filter_map(|r| r.data()["id"].as_i64()).collect();
    assert_eq!(ids.len(), 50);
    assert_eq!(app.count("SELECT count(*) FROM orders o WHERE NOT EXISTS (SELECT 1 FROM order_items i WHERE i.order_id = o.id)"), 0);
}

#[actix_web::test]
async fn two_instances_on_one_database_never_oversell() {
    let a = spawn_app().await;
    let b = a.second_instance().await;
    let admin = a.user_with_role("admin@example.com", "admin").await.access;
    // 150 units for 200 single-unit orders, 100 through each instance: more
    // than either instance alone can sell, so both must sell.
    let product = a.product(&admin, "Hot item", "10.00", 150).await;
    let users = a.bulk_users(200);
    let results = join_all(users.iter().enumerate().map(|(i, (_, t))| {
        let app = if i % 2 == 0 { &a } else { &b };
        order(app, t, product, 1)
    }))
    .await;
    assert_eq!(tally(&results), (150, 50, 0));
    assert_eq!(a.stock_of(product), 0);
    assert_eq!(a.count("SELECT count(*) FROM orders"), 150);
    assert_eq!(a.count("SELECT coalesce(sum(quantity), 0) FROM order_items"), 150);
    // Each instance sold at least the 50 units the other could not, and the
    // two shares add up to the 150.
    let sold_by = |instance: usize| {
        results
            .iter()
            .enumerate()
            .filter(|(i, r)| i % 2 == instance && r.status == StatusCode::CREATED)
            .count()
    };
    let (from_a, from_b) = (sold_by(0), sold_by(1));
    assert!(from_a >= 50 && from_b >= 50, "first {from_a}, second {from_b}");
    assert_eq!(from_a + from_b, 150);
}

#[actix_web::test]
async fn concurrent_cancels_and_orders_never_drive_stock_negative() {
    let app = spawn_app().await;
    let admin = app.user_with_role("admin@example.com", "admin").await.access;
    let product = app.product(&admin, "Widget", "3.00", 40).await;
    let users = app.bulk_users(80);
    // 20 orders of 2 units take all 40.
    let first = join_all(users[..20].iter().map(|(_, t)| order(&app, t, product, 2))).await;
    assert_eq!(tally(&first).0, 20);
    assert_eq!(app.stock_of(product), 0);
    // Now cancel them all (twice each) while 60 others try to buy 2 units.
    let cancels = first.iter().zip(&users[..20]).flat_map(|(r, (_, t))| {
        let path = format!("/api/v1/orders/{}/cancel", r.data()["id"]);
        [(path.clone(), t.clone()), (path, t.clone())]
    });
    let cancel_futs = join_all(cancels.map(|(path, t)| {
        let app = &app;
        async move { app.post(&path, Some(&t), json!({})).await }
    }));
    let order_futs = join_all(users[20..].iter().map(|(_, t)| order(&app, t, product, 2)));
    let (cancelled, ordered) = tokio::join!(cancel_futs, order_futs);
    let ok_cancels = cancelled.iter().filter(|r| r.status == StatusCode::OK).count();
    let dup_cancels = cancelled
        .iter()
        .filter(|r| r.status == StatusCode::CONFLICT)
        .count();
    assert_eq!(
        (ok_cancels, dup_cancels),
        (20, 20),
        "each order cancelled exactly once"
    );
    let (created, conflict, other) = tally(&ordered);
    assert_eq!(other, 0);
    assert_eq!(created + conflict, 60);
    // The books: the 20 first orders cancelled, each 201 a live order of 2
    // units, and the initial 40 = stock + units in live orders.
    let created = created as i64;
    assert_eq!(
        app.count("SELECT count(*) FROM orders WHERE status = 'cancelled'"),
        20
    );
    assert_eq!(
        app.count("SELECT count(*) FROM orders WHERE status = 'pending'"),
        created
    );
    let live = app.count("SELECT coalesce(sum(i.quantity), 0) FROM order_items i JOIN orders o ON o.id = i.order_id WHERE o.status <> 'cancelled'");
    assert_eq!(live, 2 * created);
    let stock = app.stock_of(product);
    assert_eq!(stock, 40 - 2 * created);
    // The stock left is really there: one order takes all of it, and the
    // next unit is refused.
    if stock > 0 {
        let r = order(&app, &users[0].1, product, stock).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    }
    let r = order(&app, &users[1].1, product, 1).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert_eq!(app.stock_of(product), 0);
}

#[actix_web::test]
async fn concurrent_retries_with_one_idempotency_key_create_one_order() {
    let app = spawn_app().await;
    let admin = app.user_with_role("admin@example.com", "admin").await.access;
    let product = app.product(&admin, "Widget", "3.00", 100).await;
    let user = app.user("retry@example.com").await.access;
    let body = json!({"items": [{"product_id": product, "quantity": 1}]});
    let results = join_all((0..20).map(|_| {
        let req = app
            .client
            .post(app.url("/api/v1/orders"))
            .bearer_auth(&user)
            .header("idempotency-key", "same-key")
            .json(&body);
        async move { Res::from(req.send().await.expect("send")).await }
    }))
    .await;
    let created: Vec<&Res> = results
        .iter()
        .filter(|r| r.status == StatusCode::CREATED)
        .collect();
    let in_flight = results
        .iter()
        .filter(|r| r.status == StatusCode::CONFLICT)
        .count();
    assert_eq!(created.len() + in_flight, 20, "only 201 or 409");
    assert!(!created.is_empty());
    assert!(
        created.iter().all(|r| r.text == created[0].text),
        "all 201s are the same order"
    );
    assert_eq!(
        created
            .iter()
            .filter(|r| r.header("idempotent-replayed").is_none())
            .count(),
        1
    );
    assert_eq!(app.count("SELECT count(*) FROM orders"), 1);
    assert_eq!(app.stock_of(product), 99);
}

#[actix_web::test]
async fn a_panic_mid_batch_fails_its_requests_commits_nothing_and_the_actor_restarts() {
    let app = spawn_app().await;
    let admin = app.user_with_role("admin@example.com", "admin").await.access;
    let product = app.product(&admin, "Fragile", "5.00", 10).await;
    let users = app.bulk_users(5);
    app.state
        .inventory
        .send(storefront::actors::inventory::PanicNextBatch)
        .await
        .expect("send");

    let started = std::time::Instant::now();
    let results = join_all(users.iter().map(|(_, t)| order(&app, t, product, 1))).await;
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "no hang");
    // The first batch panicked: its requests got an error; later batches (if
    // the requests were split) may have succeeded after the restart.
    let failed: Vec<&Res> = results
        .iter()
        .filter(|r| r.status == StatusCode::SERVICE_UNAVAILABLE)
        .collect();
    assert!(
        !failed.is_empty(),
        "{:?}",
        results.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    for r in &failed {
        assert_eq!(r.body["success"], json!(false));
        assert!(r.header("retry-after").is_some());
        assert!(!r.text.contains("panic"), "{}", r.text);
    }
    let succeeded = results.iter().filter(|r| r.status == StatusCode::CREATED).count();
    assert_eq!(failed.len() + succeeded, 5);
    // Nothing of the failed batch was committed.
    assert_eq!(app.count("SELECT count(*) FROM orders"), succeeded as i64);
    assert_eq!(app.stock_of(product), 10 - succeeded as i64);

    // The restarted actor serves the next request.
    let r = order(&app, &users[0].1, product, 1).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(app.stock_of(product), 9 - succeeded as i64);
}

/// Whatever changes a product row behind the actor's back (another instance,
/// an admin through the CatalogActor, SQL), the next order is decided on the
/// row as it is: never sold from stock that is not there, never at a stale
/// price, never for a deactivated product, never turned away for short stock
/// that was restocked.
#[actix_web::test]
async fn orders_see_stock_price_and_activity_changed_behind_the_actors_back() {
    let app = spawn_app().await;
    let admin = app.user_with_role("admin@example.com", "admin").await.access;
    let product = app.product(&admin, "Hot item", "10.00", 10).await;
    let users = app.bulk_users(6);
    let set_stock = |n: i64| {
        app.db.execute(&format!(
            "UPDATE products SET stock_quantity = {n} WHERE id = {product}"
        ))
    };
    for (_, token) in &users[..2] {
        assert_eq!(order(&app, token, product, 1).await.status, StatusCode::CREATED);
    }
    assert_eq!(app.stock_of(product), 8);

    // Sold out elsewhere: the actor still believes in 8 units.
    set_stock(0);
    let r = order(&app, &users[2].1, product, 1).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    assert_eq!(app.stock_of(product), 0);
    assert_eq!(app.count("SELECT count(*) FROM orders"), 2);

    // Restocked elsewhere: the actor believes in 0 units, and must not turn
    // the order away on that belief.
    set_stock(5);
    assert_eq!(
        order(&app, &users[3].1, product, 2).await.status,
        StatusCode::CREATED
    );
    assert_eq!(app.stock_of(product), 3);

    // Repriced by an admin (through the CatalogActor, not this actor).
    let path = format!("/api/v1/products/{product}");
    assert_eq!(
        app.put(&path, Some(&admin), json!({"price": "12.50"}))
            .await
            .status,
        StatusCode::OK
    );
    let r = order(&app, &users[4].1, product, 1).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(r.data()["total_amount"], json!("12.50"));
    assert_eq!(r.data()["items"][0]["unit_price"], json!("12.50"));
    assert_eq!(app.stock_of(product), 2);

    // Restocked elsewhere.
    set_stock(7);
    assert_eq!(
        order(&app, &users[0].1, product, 1).await.status,
        StatusCode::CREATED
    );
    assert_eq!(app.stock_of(product), 6);
    assert_eq!(
        order(&app, &users[1].1, product, 5).await.status,
        StatusCode::CREATED
    );
    assert_eq!(app.stock_of(product), 1);
    let r = order(&app, &users[2].1, product, 2).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    assert_eq!(app.stock_of(product), 1);

    // Deactivated by an admin.
    assert_eq!(
        app.put(&path, Some(&admin), json!({"is_active": false}))
            .await
            .status,
        StatusCode::OK
    );
    let r = order(&app, &users[5].1, product, 1).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{:?}", r.body);
    assert_eq!(app.stock_of(product), 1);
    assert_eq!(
        app.count("SELECT coalesce(sum(quantity), 0) FROM order_items"),
        11
    );
}

/// Orders are decided in arrival order even while their rows are locked by
/// someone else. Here a transaction leaves P a single unit and reprices Q,
/// and holds both rows while the first order (a unit of P and one of Q)
/// arrives, then the second (a unit of P). The first order gets the unit,
/// at Q's new price; the second, which would succeed on its own, gets 409.
#[actix_web::test]
async fn orders_waiting_for_a_row_lock_are_decided_in_arrival_order() {
    let app = spawn_app().await;
    let admin = app.user_with_role("admin@example.com", "admin").await.access;
    let p = app.product(&admin, "P", "10.00", 10).await;
    let q = app.product(&admin, "Q", "5.00", 10).await;
    let users = app.bulk_users(3);
    let both = json!({"items": [{"product_id": p, "quantity": 1}, {"product_id": q, "quantity": 1}]});
    let r = app.post("/api/v1/orders", Some(&users[0].1), both.clone()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);

    let (held_tx, held_rx) = std::sync::mpsc::channel::<()>();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let (url, sql) = (
        app.db.url.clone(),
        format!(
            "UPDATE products SET stock_quantity = 1 WHERE id = {p}; \
             UPDATE products SET price = 6.00 WHERE id = {q}"
        ),
    );
    let holder = std::thread::spawn(move || {
        use diesel::{connection::SimpleConnection, Connection};
        let mut conn = crate::helpers::SyncConn::establish(&url).expect("connect");
        conn.transaction::<_, diesel::result::Error, _>(|c| {
            c.batch_execute(&sql)?;
            held_tx.send(()).expect("test alive");
            release_rx.recv().expect("test alive");
            Ok(())
        })
        .expect("hold P's row");
    });
    held_rx.recv().expect("holder started");
    let pause = || tokio::time::sleep(std::time::Duration::from_millis(300));
    let first = {
        let (client, url, token) = (app.client.clone(), app.url("/api/v1/orders"), users[1].1.clone());
        tokio::spawn(async move { client.post(url).bearer_auth(token).json(&both).send().await })
    };
    pause().await;
    let second = {
        let body = json!({"items": [{"product_id": p, "quantity": 1}]});
        let (client, url, token) = (app.client.clone(), app.url("/api/v1/orders"), users[2].1.clone());
        tokio::spawn(async move { client.post(url).bearer_auth(token).json(&body).send().await })
    };
    pause().await;
    release_tx.send(()).expect("holder alive");
    holder.join().expect("holder");

    let first = first.await.expect("task").expect("first order");
    let second = second.await.expect("task").expect("second order");
    assert_eq!(first.status(), StatusCode::CREATED);
    let body: serde_json::Value = first.json().await.expect("json");
    assert_eq!(body["data"]["total_amount"], json!("16.00"), "{body}");
    assert_eq!(second.status(), StatusCode::CONFLICT);
    assert_eq!(app.stock_of(p), 0);
}

/// A batch pipelines BEGIN with its locking statement and its write with
/// COMMIT on one connection; only their order on the wire makes them one
/// transaction. Checked on the server, for a flash sale of single-unit
/// orders (large batches): a trigger added for the test logs every change
/// of the product's stock with its transaction's id and start time
/// (`now()`). Every order, its items and its Idempotency-Key row carry one
/// logged change's transaction id as `xmin`, and the order's `created_at`
/// (the locking statement's `now()`, bound into the write) is that
/// transaction's start time: the lock and the write ran in one transaction,
/// begun before the lock (else the lock's `now()` would be that of an
/// autocommit of its own) and committed after the write (else the write
/// would run alone, in a transaction begun later). Each change's decrement is
/// the units of its own orders, the product row ends as the last change left
/// it, and there are fewer transactions than orders.
#[actix_web::test]
async fn each_pipelined_batch_reaches_postgres_as_one_transaction_in_order() {
    let app = spawn_app().await;
    let admin = app.user_with_role("admin@example.com", "admin").await.access;
    let product = app.product(&admin, "Flash", "4.00", 200).await;
    app.db.batch(&format!(
        "CREATE TABLE stock_log (xid bigint, started timestamptz, old_stock int, new_stock int); \
         CREATE FUNCTION log_stock() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           INSERT INTO stock_log VALUES (txid_current() % 4294967296, now(), OLD.stock_quantity, \
             NEW.stock_quantity); \
           RETURN NULL; END $$; \
         CREATE TRIGGER log_stock AFTER UPDATE OF stock_quantity ON products FOR EACH ROW \
           WHEN (OLD.id = {product} AND OLD.stock_quantity IS DISTINCT FROM NEW.stock_quantity) \
           EXECUTE FUNCTION log_stock()"
    ));
    let users = app.bulk_users(300);
    let body = json!({"items": [{"product_id": product, "quantity": 1}]});
    let results = join_all(users.iter().enumerate().map(|(i, (_, token))| {
        let req = app
            .client
            .post(app.url("/api/v1/orders"))
            .bearer_auth(token)
            .header("idempotency-key", format!("flash-{i}"))
            .json(&body);
        async move { Res::from(req.send().await.expect("send")).await }
    }))
    .await;
    assert_eq!(tally(&results), (200, 100, 0));
    assert_eq!(app.stock_of(product), 0);
    assert_eq!(app.count("SELECT count(*) FROM orders"), 200);
    assert_eq!(app.count("SELECT count(*) FROM order_items"), 200);

    let xid = "xmin::text::bigint";
    // No order that does not belong to exactly one logged stock change...
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM orders o WHERE (SELECT count(*) FROM stock_log l WHERE l.xid = o.{xid}) <> 1"
        )),
        0
    );
    // ...or whose change's transaction did not begin when the batch's
    // locking statement ran.
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM orders o JOIN stock_log l ON l.xid = o.{xid} WHERE l.started <> o.created_at"
        )),
        0
    );
    // Its items and its Idempotency-Key row were written by that transaction.
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM order_items i JOIN orders o ON o.id = i.order_id WHERE i.{xid} <> o.{xid}"
        )),
        0
    );
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM idempotency_keys k JOIN orders o ON o.id = k.order_id \
             WHERE k.{xid} = o.{xid} AND k.response_status = 201"
        )),
        200
    );
    // Each change took exactly the units of its own orders, and the changes
    // add up to the sale.
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM stock_log l WHERE l.old_stock - l.new_stock <> \
             (SELECT count(*) FROM orders o WHERE o.{xid} = l.xid)"
        )),
        0
    );
    assert_eq!(app.count("SELECT sum(old_stock - new_stock) FROM stock_log"), 200);
    // One logged change per transaction that wrote orders, and the product's
    // row version is the one the last of them wrote.
    let batches = app.count(&format!("SELECT count(DISTINCT {xid}) FROM orders"));
    assert_eq!(app.count("SELECT count(*) FROM stock_log"), batches);
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM products p JOIN stock_log l ON l.xid = p.{xid} \
             WHERE p.id = {product} AND l.new_stock = 0"
        )),
        1
    );
    assert!(batches < 200, "{batches} transactions for 200 orders");
}

/// A batch's transaction dropped unfinished where `spawn_local` would
/// panic: in a runtime without a `LocalSet`, and on a thread without a
/// runtime. Neither drop panics, the transaction ends (aborted), and the
/// pool never hands out the connection inside it: rolled back and reused in
/// the runtime, discarded without one.
#[test]
fn an_unfinished_batch_transaction_dropped_outside_a_local_set_ends_and_never_returns_open() {
    use diesel::sql_types::{BigInt, Text};
    use diesel_async::RunQueryDsl;
    use storefront::actors::inventory::OpenTransaction;

    let db = crate::helpers::TestDb::new();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let pool = runtime
        .block_on(async { storefront::db::build_pool(&db.url, 1, std::time::Duration::from_secs(5), None) });
    // The fate of transaction `xid`, once Postgres knows it.
    let ended = |xid: i64| {
        let pool = pool.clone();
        async move {
            for _ in 0..100 {
                let mut conn = pool.get().await.expect("connection");
                let status: String = diesel::select(diesel::dsl::sql::<Text>(&format!("txid_status({xid})")))
                    .get_result(&mut *conn)
                    .await
                    .expect("txid_status");
                if status != "in progress" {
                    return status;
                }
                drop(conn);
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            panic!("transaction {xid} is still open");
        }
    };
    let current = |pool: storefront::db::DbPool| async move {
        let mut conn = pool.get().await.expect("connection");
        diesel::select(diesel::dsl::sql::<BigInt>("txid_current()"))
            .get_result::<i64>(&mut *conn)
            .await
            .expect("txid_current")
    };

    runtime.block_on(async {
        // In a runtime, outside any LocalSet.
        let (tx, xid) = OpenTransaction::begin(&pool).await.expect("begin");
        drop(tx);
        assert_eq!(ended(xid).await, "aborted");
        assert_ne!(current(pool.clone()).await, xid);
        let state = pool.state();
        assert_eq!(
            (state.connections, state.statistics.connections_closed_broken),
            (1, 0),
            "rolled back and reused"
        );

        // On a thread without a runtime.
        let (tx, xid) = OpenTransaction::begin(&pool).await.expect("begin");
        std::thread::spawn(move || drop(tx))
            .join()
            .expect("the drop did not panic");
        let state = pool.state();
        assert_eq!(
            (state.connections, state.statistics.connections_closed_broken),
            (0, 1),
            "discarded"
        );
        assert_eq!(ended(xid).await, "aborted");
        assert_ne!(current(pool.clone()).await, xid);
    });
}

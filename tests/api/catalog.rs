//! Categories and products: admin writes, public reads, soft delete,
//! validation, money as strings, filters, sorts, both paginations, search.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_with, spawn_on, TestApp};

async fn admin(app: &TestApp) -> String {
    app.user_with_role("admin@example.com", "admin").await.access
}

#[actix_web::test]
async fn categories_crud_rbac_and_conflicts() {
    let app = spawn_app().await;
    let admin = admin(&app).await;
    let user = app.user("u@example.com").await.access;

    let body = json!({"name": "Books", "description": "Paper"});
    assert_eq!(
        app.post("/api/v1/categories", None, body.clone()).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.post("/api/v1/categories", Some(&user), body.clone())
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    let r = app.post("/api/v1/categories", Some(&admin), body.clone()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let id = r.data()["id"].as_i64().expect("id");
    let keys: Vec<&String> = r.data().as_object().expect("obj").keys().collect();
    assert_eq!(keys, ["created_at", "description", "id", "name", "updated_at"]);

    // Name unique, case-insensitively.
    let r = app
        .post("/api/v1/categories", Some(&admin), json!({"name": "BOOKS"}))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let r = app
        .post("/api/v1/categories", Some(&admin), json!({"name": "  "}))
        .await;
    assert_eq!(r.error_fields(), ["name"]);

    // Public reads.
    let r = app.get(&format!("/api/v1/categories/{id}"), None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.data()["name"], json!("Books"));
    let r = app.get("/api/v1/categories", None).await;
    assert_eq!(r.data()["total"], json!(1));

    // Update; null clears the description.
    let r = app
        .put(
            &format!("/api/v1/categories/{id}"),
            Some(&admin),
            json!({"description": null}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.data()["description"], Value::Null);
    assert_eq!(r.data()["name"], json!("Books"));
    assert_ne!(
        r.data()["updated_at"],
        r.data()["created_at"],
        "updated_at kept current"
    );

    // In use → 409; unused → deleted.
    let p = app
        .post(
            "/api/v1/products",
            Some(&admin),
            json!({"name": "Novel", "price": "9.99", "category_id": id}),
        )
        .await;
    assert_eq!(p.status, StatusCode::CREATED, "{}", p.text);
    let r = app
        .delete(&format!("/api/v1/categories/{id}"), Some(&admin))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let pid = p.data()["id"].as_i64().expect("id");
    app.put(
        &format!("/api/v1/products/{pid}"),
        Some(&admin),
        json!({"category_id": null}),
    )
    .await;
    assert_eq!(
        app.delete(&format!("/api/v1/categories/{id}"), Some(&admin))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        app.get(&format!("/api/v1/categories/{id}"), None).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.delete(&format!("/api/v1/categories/{id}"), Some(&admin))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[actix_web::test]
async fn product_create_validates_and_formats_money() {
    let app = spawn_app().await;
    let admin = admin(&app).await;
    let r = app
        .post(
            "/api/v1/products",
            Some(&admin),
            json!({"name": "Pen", "price": 1.5}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let d = r.data();
    assert_eq!(d["price"], json!("1.50"));
    assert_eq!(d["stock_quantity"], json!(0));
    assert_eq!(d["is_active"], json!(true));
    assert_eq!(d["category_id"], Value::Null);
    let keys: Vec<&String> = d.as_object().expect("obj").keys().collect();
    assert_eq!(
        keys,
        [
            "category_id",
            "created_at",
            "description",
            "id",
            "is_active",
            "name",
            "price",
            "reserved_quantity",
            "stock_quantity",
            "updated_at"
        ]
    );

    let r = app
        .post(
            "/api/v1/products",
            Some(&admin),
            json!({"name": "", "price": "0", "stock_quantity": -1, "category_id": 999999}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.error_fields(), ["name", "price", "stock_quantity"]);
    for bad in [
        json!("100000000.00"),
        json!("1.999"),
        json!(-5),
        json!("abc"),
        json!(true),
    ] {
        let r = app
            .post(
                "/api/v1/products",
                Some(&admin),
                json!({"name": "X", "price": bad}),
            )
            .await;
        assert_eq!(r.error_fields(), ["price"], "{bad}");
    }
    let r = app
        .post(
            "/api/v1/products",
            Some(&admin),
            json!({"name": "X", "price": "99999999.99"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.data()["price"], json!("99999999.99"));
    let r = app
        .post(
            "/api/v1/products",
            Some(&admin),
            json!({"name": "X", "price": "1", "category_id": 999999}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.error_fields(), ["category_id"]);
    let r = app
        .post("/api/v1/products", Some(&admin), json!({"name": "X"}))
        .await;
    assert_eq!(r.error_fields(), ["price"]);
    let user = app.user("u@example.com").await.access;
    let r = app
        .post(
            "/api/v1/products",
            Some(&user),
            json!({"name": "X", "price": "1"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[actix_web::test]
async fn product_update_soft_delete_and_visibility() {
    let app = spawn_app().await;
    let admin = admin(&app).await;
    let id = app.product(&admin, "Lamp", "20.00", 5).await;
    let path = format!("/api/v1/products/{id}");

    let r = app.put(&path, Some(&admin), json!({"stock_quantity": 100})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.error_fields(), ["stock_quantity"]);
    assert_eq!(app.stock_of(id), 5);

    let r = app
        .put(
            &path,
            Some(&admin),
            json!({"price": "25", "name": "Desk lamp", "id": 77, "created_at": "x"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.data()["price"], json!("25.00"));
    assert_eq!(r.data()["id"], json!(id));

    assert_eq!(app.delete(&path, Some(&admin)).await.status, StatusCode::OK);
    // Gone for the public, there for admins.
    assert_eq!(app.get(&path, None).await.status, StatusCode::NOT_FOUND);
    let r = app.get(&path, Some(&admin)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.data()["is_active"], json!(false));
    assert_eq!(app.get("/api/v1/products", None).await.data()["total"], json!(0));
    assert_eq!(
        app.get("/api/v1/products", Some(&admin)).await.data()["total"],
        json!(1)
    );
    // Reactivate.
    let r = app.put(&path, Some(&admin), json!({"is_active": true})).await;
    assert_eq!(r.data()["is_active"], json!(true));
    assert_eq!(app.get(&path, None).await.status, StatusCode::OK);
    assert_eq!(
        app.put("/api/v1/products/999999", Some(&admin), json!({"name": "x"}))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    // A bad token on a public endpoint is still a 401.
    assert_eq!(
        app.get(&path, Some("garbage")).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[actix_web::test]
async fn stock_endpoint_moves_stock_and_never_below_zero() {
    let app = spawn_app().await;
    let admin = admin(&app).await;
    let id = app.product(&admin, "Mug", "4.00", 3).await;
    let path = format!("/api/v1/products/{id}/stock");
    let r = app.post(&path, Some(&admin), json!({"delta": 7})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.data(), &json!({"product_id": id, "stock_quantity": 10}));
    let r = app.post(&path, Some(&admin), json!({"delta": -11})).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(app.stock_of(id), 10);
    let r = app.post(&path, Some(&admin), json!({"delta": -10})).await;
    assert_eq!(r.data()["stock_quantity"], json!(0));
    for bad in [
        json!(0),
        json!("1"),
        json!(1.5),
        json!(null),
        json!(3_000_000_000_i64),
    ] {
        let r = app.post(&path, Some(&admin), json!({"delta": bad})).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(r.error_fields(), ["delta"]);
    }
    assert_eq!(
        app.post("/api/v1/products/999999/stock", Some(&admin), json!({"delta": 1}))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let user = app.user("u@example.com").await.access;
    assert_eq!(
        app.post(&path, Some(&user), json!({"delta": 1})).await.status,
        StatusCode::FORBIDDEN
    );
}

#[actix_web::test]
async fn filters_and_sorts() {
    let app = spawn_app().await;
    let admin = admin(&app).await;
    let cat = app
        .post("/api/v1/categories", Some(&admin), json!({"name": "Garden"}))
        .await
        .data()["id"]
        .as_i64()
        .expect("id");
    for (name, price, stock) in [
        ("Rake", "15.00", 0),
        ("Hose", "30.00", 2),
        ("Shovel", "25.50", 1),
        ("Gnome", "5.00", 9),
    ] {
        let r = app
            .post(
                "/api/v1/products",
                Some(&admin),
                json!({"name": name, "price": price, "stock_quantity": stock, "category_id": cat}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
    }
    app.product(&admin, "Laptop", "999.00", 1).await;
    let names = |r: &crate::helpers::Res| -> Vec<String> {
        r.data()["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|p| p["name"].as_str().expect("name").to_owned())
            .collect()
    };
    let r = app
        .get(&format!("/api/v1/products?category_id={cat}&sort=price"), None)
        .await;
    assert_eq!(names(&r), ["Gnome", "Rake", "Shovel", "Hose"]);
    let r = app.get("/api/v1/products?sort=-price&limit=2", None).await;
    assert_eq!(names(&r), ["Laptop", "Hose"]);
    assert_eq!(r.data()["total"], json!(5));
    let r = app.get("/api/v1/products?sort=name", None).await;
    assert_eq!(names(&r), ["Gnome", "Hose", "Laptop", "Rake", "Shovel"]);
    let r = app.get("/api/v1/products?sort=created_at", None).await;
    assert_eq!(names(&r), ["Rake", "Hose", "Shovel", "Gnome", "Laptop"]);
    let r = app.get("/api/v1/products", None).await;
    assert_eq!(
        names(&r),
        ["Laptop", "Gnome", "Shovel", "Hose", "Rake"],
        "default -created_at"
    );
    let r = app
        .get("/api/v1/products?min_price=10&max_price=26&sort=price", None)
        .await;
    assert_eq!(names(&r), ["Rake", "Shovel"]);
    let r = app.get("/api/v1/products?in_stock=true&sort=name", None).await;
    assert_eq!(names(&r), ["Gnome", "Hose", "Laptop", "Shovel"]);
    let r = app.get("/api/v1/products?search=HOS", None).await;
    assert_eq!(names(&r), ["Hose"]);
    // Description matches too.
    let r = app.get("/api/v1/products?search=laptop%20desc", None).await;
    assert_eq!(names(&r), ["Laptop"]);
    let r = app.get("/api/v1/products?search=%25", None).await;
    assert_eq!(r.data()["total"], json!(0), "% matches literally");

    let r = app
        .get(
            "/api/v1/products?sort=random&min_price=abc&max_price=-1&in_stock=maybe&category_id=x",
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        r.error_fields(),
        ["category_id", "min_price", "max_price", "in_stock", "sort"]
    );
    let r = app.get("/api/v1/products?min_price=20&max_price=10", None).await;
    assert_eq!(r.error_fields(), ["min_price"]);
}

async fn walk(app: &TestApp, query: &str) -> Vec<i64> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let path = match &cursor {
            Some(c) => format!("/api/v2/products?{query}&cursor={c}"),
            None => format!("/api/v2/products?{query}"),
        };
        let r = app.get(&path, None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        ids.extend(
            r.data()["items"]
                .as_array()
                .expect("items")
                .iter()
                .map(|p| p["id"].as_i64().expect("id")),
        );
        match r.data()["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return ids,
        }
    }
    panic!("walk did not end");
}

#[actix_web::test]
async fn v2_keyset_walks_match_v1_order_for_every_sort() {
    let app = spawn_app().await;
    let admin = admin(&app).await;
    // Ties on price and name, so the id tiebreak matters.
    for i in 0..13 {
        app.product(
            &admin,
            &format!("Item {}", i % 4),
            &format!("{}.00", 10 + i % 3),
            i64::from(i % 2),
        )
        .await;
    }
    for sort in ["-created_at", "created_at", "price", "-price", "name"] {
        for filter in ["", "&in_stock=true", "&search=item%201"] {
            let q = format!("sort={sort}{filter}");
            let v1 = app.get(&format!("/api/v1/products?{q}&limit=100"), None).await;
            let expected: Vec<i64> = v1.data()["items"]
                .as_array()
                .expect("items")
                .iter()
                .map(|p| p["id"].as_i64().expect("id"))
                .collect();
            let walked = walk(&app, &format!("{q}&limit=3")).await;
            assert_eq!(walked, expected, "{q}");
            assert!(!expected.is_empty());
        }
    }
    // A cursor belongs to its sort; tampering is a 400.
    let r = app.get("/api/v2/products?sort=price&limit=2", None).await;
    let c = r.data()["next_cursor"].as_str().expect("cursor").to_owned();
    let r = app
        .get(&format!("/api/v2/products?sort=name&cursor={c}"), None)
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.error_fields(), ["cursor"]);
    let r = app
        .get(&format!("/api/v2/products?sort=price&cursor={}x", c), None)
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // Categories paginate both ways too.
    for i in 0..5 {
        app.post(
            "/api/v1/categories",
            Some(&admin),
            json!({"name": format!("Cat {i}")}),
        )
        .await;
    }
    let r = app.get("/api/v2/categories?limit=2", None).await;
    assert_eq!(r.data()["items"].as_array().map(Vec::len), Some(2));
    let c = r.data()["next_cursor"].as_str().expect("cursor");
    let r = app
        .get(&format!("/api/categories?limit=10&cursor={c}"), None)
        .await;
    let names: Vec<&str> = r.data()["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|c| c["name"].as_str().expect("n"))
        .collect();
    assert_eq!(names, ["Cat 2", "Cat 3", "Cat 4"]);
}

#[actix_web::test]
async fn search_uses_the_trigram_index() {
    let app = spawn_app().await;
    app.db.execute(
        "INSERT INTO products (name, description, price, stock_quantity) \
         SELECT 'Product ' || g || ' ' || md5(g::text), 'About ' || md5((g * 7)::text), 10, 1 \
         FROM generate_series(1, 100000) g",
    );
    app.db.execute("ANALYZE products");
    // The exact expression and operator the listing uses, planned with the
    // settings of the server's catalog-read connections.
    let setup = storefront::actors::catalog::READS_SESSION_SETUP;
    let filter = format!(
        "is_active AND {} LIKE lower('%ABC1%')",
        storefront::models::product::SEARCH_EXPR
    );
    // The total: every match is counted, so it must come from the index.
    let count = app
        .db
        .explain(setup, &format!("SELECT count(*) FROM products WHERE {filter}"));
    assert!(count.contains("products_search_text_trgm_idx"), "{count}");
    assert!(!count.contains("Seq Scan"), "{count}");
    // A plain public search counts its narrow copy (migration 000008).
    app.db.execute("ANALYZE product_search");
    let narrow = app.db.explain(
        setup,
        "SELECT count(*) FROM product_search WHERE search_text LIKE lower('%ABC1%')",
    );
    assert!(narrow.contains("product_search_trgm_idx"), "{narrow}");
    // The page: the index, or a walk down created_at that stops after 10
    // matches; never a whole-table scan.
    let page = app.db.explain(
        setup,
        &format!("SELECT id FROM products WHERE {filter} ORDER BY created_at DESC, id DESC LIMIT 10"),
    );
    assert!(!page.contains("Seq Scan"), "{page}");
    // The pages planned from a remembered total (`SearchPlan`): their shape
    // fixes the plan, custom or generic.
    for mode in ["auto", "force_generic_plan"] {
        for walk in [true, false] {
            let sql = storefront::models::product::search_page_sql(walk);
            let plan = app.db.explain(
                &format!(
                    "{setup}; SET plan_cache_mode = {mode}; \
                     PREPARE page(text, timestamptz, int8, int8, int8) AS {sql}"
                ),
                "EXECUTE page('%abc1%', now(), 9223372036854775807, 20, 0)",
            );
            let (uses, avoids) = match walk {
                true => ("products_created_at_id_idx", "products_search_text_trgm_idx"),
                false => ("products_search_text_trgm_idx", "products_created_at_id_idx"),
            };
            assert!(
                plan.contains(uses) && !plan.contains(avoids),
                "{mode}, walk {walk}: {plan}"
            );
            assert!(!plan.contains("Seq Scan"), "{plan}");
        }
    }
}

/// A search page planned from a remembered total (a walk down `created_at`
/// for common terms, the trigram index for rare ones, nothing at all for a
/// term known to match nothing) is the page the planner's own query
/// returns: same rows, same order (ties on `created_at` included), same
/// total, on every v1 page and every v2 page.
#[actix_web::test]
async fn planned_search_pages_are_the_planners_pages() {
    let a = spawn_app_with(|s| s.cache.enabled = false).await;
    let mut settings = a.settings.clone();
    settings.cache.search_totals = 0;
    let b = spawn_on(a.db.clone(), settings).await;
    a.db.execute(
        "INSERT INTO products (name, description, price, stock_quantity, is_active, created_at) \
         SELECT CASE WHEN g % 4 = 0 THEN 'Chair ' ELSE 'Lamp ' END || g, \
                CASE WHEN g IN (7, 21) THEN 'a vase too' END, 10, 1, g <> 13, \
                now() - (g / 2) * interval '1 minute' \
         FROM generate_series(1, 40) g",
    );
    a.db.execute("ANALYZE products");
    a.db.execute("ANALYZE product_search");
    for term in ["lamp", "vase", "zebra", "chair"] {
        for page in 1..=7 {
            let path = format!("/api/v1/products?search={term}&limit=5&page={page}");
            // The first fills the memory, the second is planned from it.
            for _ in 0..2 {
                let (planned, planner) = (a.get(&path, None).await, b.get(&path, None).await);
                assert_eq!(planned.status, StatusCode::OK);
                assert_eq!(planned.data(), planner.data(), "{path}");
            }
        }
    }
    // v2: every page, following each instance's own cursors.
    for term in ["lamp", "vase", "zebra", "chair"] {
        for _ in 0..2 {
            let (mut next_a, mut next_b) = (Some(String::new()), Some(String::new()));
            let mut pages = 0;
            while let (Some(ca), Some(cb)) = (next_a.take(), next_b.take()) {
                let path = |c: &str| match c {
                    "" => format!("/api/v2/products?search={term}&limit=4"),
                    c => format!("/api/v2/products?search={term}&limit=4&cursor={c}"),
                };
                let (planned, planner) = (a.get(&path(&ca), None).await, b.get(&path(&cb), None).await);
                assert_eq!(
                    planned.data()["items"],
                    planner.data()["items"],
                    "{term}, page {pages}"
                );
                next_a = planned.data()["next_cursor"].as_str().map(str::to_owned);
                next_b = planner.data()["next_cursor"].as_str().map(str::to_owned);
                assert_eq!(next_a.is_some(), next_b.is_some());
                pages += 1;
            }
            assert!(pages >= 1);
        }
    }
    let total = |r: crate::helpers::Res| r.data()["total"].as_i64().expect("total");
    assert_eq!(total(a.get("/api/v1/products?search=lamp", None).await), 29);
    assert_eq!(total(a.get("/api/v1/products?search=zebra", None).await), 0);
    // Known to match nothing, until it does.
    a.db.execute("INSERT INTO products (name, price) VALUES ('Zebra print rug', 30)");
    let r = a.get("/api/v1/products?search=zebra", None).await;
    assert_eq!(r.data()["total"], 1);
    assert_eq!(r.data()["items"][0]["name"], "Zebra print rug");
}

/// Plain public searches count their `total` from `product_search`
/// (migration 000008), kept by triggers: it must follow every change of
/// name, description and activity, from the API and from bulk SQL.
#[actix_web::test]
async fn search_totals_follow_every_catalog_change() {
    let app = spawn_app().await;
    let admin = admin(&app).await;
    let total = |r: crate::helpers::Res| r.data()["total"].as_i64().expect("total");
    let brass = app.product(&admin, "Brass Lamp", "20.00", 5).await;
    let desk = app.product(&admin, "Desk LAMP", "30.00", 0).await;
    let chair = app
        .post(
            "/api/v1/products",
            Some(&admin),
            json!({"name": "Chair", "description": "goes with a lamp", "price": "40.00"}),
        )
        .await
        .data()["id"]
        .as_i64()
        .expect("id");
    app.product(&admin, "Table", "50.00", 1).await;
    let lamps = |query: &'static str| format!("/api/v1/products?search={query}");
    assert_eq!(total(app.get(&lamps("lamp"), None).await), 3);

    // Described away, renamed into it, deactivated, reactivated.
    let r = app
        .put(
            &format!("/api/v1/products/{chair}"),
            Some(&admin),
            json!({"description": "plain"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(total(app.get(&lamps("lamp"), None).await), 2);
    app.put(
        &format!("/api/v1/products/{chair}"),
        Some(&admin),
        json!({"name": "Lamp chair"}),
    )
    .await;
    assert_eq!(total(app.get(&lamps("lamp"), None).await), 3);
    app.delete(&format!("/api/v1/products/{desk}"), Some(&admin))
        .await;
    assert_eq!(total(app.get(&lamps("lamp"), None).await), 2);
    // Admins search inactive products too (counted on `products`).
    assert_eq!(total(app.get(&lamps("lamp"), Some(&admin)).await), 3);
    app.put(
        &format!("/api/v1/products/{desk}"),
        Some(&admin),
        json!({"is_active": true}),
    )
    .await;
    assert_eq!(total(app.get(&lamps("lamp"), None).await), 3);
    // Stock moves leave the search alone.
    let r = app
        .post(
            &format!("/api/v1/products/{brass}/stock"),
            Some(&admin),
            json!({"delta": 3}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(total(app.get(&lamps("lamp"), None).await), 3);
    // A term without three letters in a row is counted on `products`; one
    // with a filter too. Both agree with the narrow count's products.
    assert_eq!(total(app.get(&lamps("la"), None).await), 3);
    assert_eq!(total(app.get(&lamps("lamp&in_stock=true"), None).await), 1);

    // Bulk SQL, as the seed does: inserted (active or not), updated,
    // deleted.
    app.db.execute(
        "INSERT INTO products (name, price, stock_quantity, is_active) \
         SELECT 'Bulk lamp ' || g, 10, 1, g % 2 = 0 FROM generate_series(1, 50) g",
    );
    // (New URLs from here on: these writes bypass the API, and with it the
    // response cache's invalidation.)
    assert_eq!(total(app.get(&lamps("lamp&limit=12"), None).await), 3 + 25);
    app.db
        .execute("UPDATE products SET is_active = true WHERE name LIKE 'Bulk lamp %'");
    app.db
        .execute("UPDATE products SET name = 'Bulk item' WHERE name = 'Bulk lamp 2'");
    app.db
        .execute(&format!("DELETE FROM products WHERE id = {brass}"));
    assert_eq!(total(app.get(&lamps("lamp&limit=13"), None).await), 2 + 49);
    // Row for row, the table is what `products` says it is.
    let drift = app.count(
        "SELECT count(*) FROM products p FULL JOIN product_search s ON s.product_id = p.id \
         WHERE (p.is_active AND s.product_id IS NULL) \
            OR (s.product_id IS NOT NULL AND (p.id IS NULL OR NOT p.is_active \
                                              OR s.search_text <> p.search_text))",
    );
    assert_eq!(drift, 0);
    assert_eq!(app.count("SELECT count(*) FROM product_search"), 53);
}

/// Each instance remembers search totals per catalog version (migration
/// 000009); a change made through another instance, which has its own
/// memory, shows in the very next total here. The response cache is off,
/// so every total below comes from the remembered count or a new one.
#[actix_web::test]
async fn remembered_search_totals_follow_changes_made_on_another_instance() {
    let a = spawn_app_with(|s| s.cache.enabled = false).await;
    let b = spawn_on(a.db.clone(), a.settings.clone()).await;
    let admin = admin(&a).await;
    let total = |r: crate::helpers::Res| r.data()["total"].as_i64().expect("total");
    let lamp = a.product(&admin, "Brass lamp", "20.00", 5).await;
    a.product(&admin, "Desk lamp", "30.00", 5).await;
    for _ in 0..3 {
        assert_eq!(total(a.get("/api/v1/products?search=lamp", None).await), 2);
    }
    b.product(&admin, "Floor lamp", "40.00", 5).await;
    assert_eq!(total(a.get("/api/v1/products?search=lamp", None).await), 3);
    let r = b
        .put(
            &format!("/api/v1/products/{lamp}"),
            Some(&admin),
            json!({"name": "Brass bowl", "description": "A bowl"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(total(a.get("/api/v1/products?search=lamp", None).await), 2);
    // Stock moves (the InventoryActor's) leave the version alone.
    let version = || a.count("SELECT version FROM product_search_version");
    let before = version();
    b.post(
        &format!("/api/v1/products/{lamp}/stock"),
        Some(&admin),
        json!({"delta": 3}),
    )
    .await;
    assert_eq!(version(), before);
    // One bump per transaction, however many rows it changes.
    a.db.execute("UPDATE products SET description = 'bulk ' || id WHERE name LIKE '%lamp%'");
    assert_eq!(version(), before + 1);
    assert_eq!(total(a.get("/api/v1/products?search=bulk", None).await), 2);
    // Plain SQL, with a savepoint rolled back: its change is gone and so is
    // its bump; the change after it bumps.
    a.db.batch(
        "BEGIN; SAVEPOINT s; UPDATE products SET name = 'Lamp shade' WHERE id = 1; \
         ROLLBACK TO s; INSERT INTO products (name, price) VALUES ('Wall lamp', 9); COMMIT",
    );
    assert_eq!(version(), before + 2);
    assert_eq!(total(a.get("/api/v1/products?search=lamp", None).await), 3);
    // Without its row the version table is broken: a server error (opaque),
    // not a 404 and not a stale total.
    a.db.execute("DELETE FROM product_search_version");
    let r = a.get("/api/v1/products?search=lamp", None).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", r.text);
    assert!(!r.text.contains("product_search_version"), "{}", r.text);
}

/// Totals stay exact while another instance changes the catalog under
/// concurrent searches: once the writers stop, the next total is the
/// table's count, whatever was remembered in between.
#[actix_web::test]
async fn remembered_search_totals_are_exact_after_concurrent_changes() {
    let a = spawn_app_with(|s| s.cache.enabled = false).await;
    let b = spawn_on(a.db.clone(), a.settings.clone()).await;
    let admin = admin(&a).await;
    let mut ids = Vec::new();
    for n in 0..16 {
        ids.push(a.product(&admin, &format!("Lamp {n}"), "10.00", 1).await);
    }
    let writers = ids.chunks(4).map(|chunk| {
        let (b, admin) = (&b, &admin);
        async move {
            for round in 0..6 {
                for (i, id) in chunk.iter().enumerate() {
                    // Deactivate, rename away, bring back: every change moves
                    // the count of "lamp".
                    let body = match (round + i) % 3 {
                        0 => json!({"is_active": false}),
                        1 => {
                            json!({"is_active": true, "name": format!("Vase {id}"), "description": "a vase"})
                        }
                        _ => json!({"name": format!("Lamp {id}"), "description": "a lamp"}),
                    };
                    let r = b.put(&format!("/api/v1/products/{id}"), Some(admin), body).await;
                    assert_eq!(r.status, StatusCode::OK);
                }
            }
        }
    });
    let readers = (0..4).map(|_| {
        let a = &a;
        async move {
            let mut seen = Vec::new();
            for _ in 0..30 {
                let r = a.get("/api/v1/products?search=lamp&limit=1", None).await;
                seen.push(r.data()["total"].as_i64().expect("total"));
            }
            seen
        }
    });
    let (_, seen) = futures_util::future::join(
        futures_util::future::join_all(writers),
        futures_util::future::join_all(readers),
    )
    .await;
    assert!(seen.iter().flatten().all(|t| (0..=16).contains(t)), "{seen:?}");
    let expected = a.count(
        "SELECT count(*) FROM products WHERE is_active \
         AND (name ILIKE '%lamp%' OR description ILIKE '%lamp%')",
    );
    assert!(expected < 16, "the writers changed something: {expected}");
    for app in [&a, &b] {
        let r = app.get("/api/v1/products?search=lamp&limit=1", None).await;
        assert_eq!(r.data()["total"].as_i64(), Some(expected));
    }
}

#[actix_web::test]
async fn v1_offset_pages_stop_at_row_ten_thousand_on_every_list() {
    let app = spawn_app().await;
    let admin = admin(&app).await;
    let id = app.product(&admin, "Kettle", "30.00", 5).await;
    let r = app
        .post(
            "/api/v1/orders",
            Some(&admin),
            json!({"items": [{"product_id": id, "quantity": 1}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let r = app
        .post(
            "/api/v1/webhooks",
            Some(&admin),
            json!({"url": "http://127.0.0.1:9/hook", "events": ["order.created"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let webhook = r.data()["id"].as_i64().expect("webhook id");

    // The last page allowed starts at row 9,990; the next one is refused.
    let r = app.get("/api/v1/products?page=1000&limit=10", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.data()["page"], json!(1000));
    assert_eq!(r.data()["items"], json!([]));
    assert_eq!(r.data()["total"], json!(1));

    let deliveries = format!("/api/v1/webhooks/{webhook}/deliveries");
    for list in [
        "/api/v1/products",
        "/api/v1/categories",
        "/api/v1/users",
        "/api/v1/orders",
        "/api/v1/reservations",
        "/api/v1/webhooks",
        deliveries.as_str(),
    ] {
        for query in ["page=1001&limit=10", "page=101&limit=100", "page=1001"] {
            let r = app.get(&format!("{list}?{query}"), Some(&admin)).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{list}?{query}: {}", r.text);
            assert_eq!(
                r.body["message"],
                json!("Offset pagination stops at 10,000 rows; use /api/v2 with cursor"),
                "{list}?{query}"
            );
        }
        let r = app.get(&format!("{list}?page=1000&limit=10"), Some(&admin)).await;
        assert_eq!(r.status, StatusCode::OK, "{list}: {}", r.text);
        // v2 has no offsets: the same query is an ordinary first page.
        let v2 = list.replacen("/api/v1/", "/api/v2/", 1);
        let r = app.get(&format!("{v2}?page=1001&limit=10"), Some(&admin)).await;
        assert_eq!(r.status, StatusCode::OK, "{v2}: {}", r.text);
        assert!(r.data()["next_cursor"].is_null(), "{v2}: {}", r.text);
    }

    // The OpenAPI document says so on every v1 list's `page`.
    let spec = app.get("/openapi.json", None).await.body;
    for list in [
        "/api/v1/products",
        "/api/v1/orders",
        "/api/v1/webhooks/{id}/deliveries",
    ] {
        let params = spec["paths"][list]["get"]["parameters"]
            .as_array()
            .expect("parameters");
        let page = params.iter().find(|p| p["name"] == "page").expect("page");
        let description = page["description"].as_str().expect("description");
        assert!(
            description.contains("must stay below 10000") && description.contains("use /api/v2 with cursor"),
            "{list}: {description}"
        );
    }
}

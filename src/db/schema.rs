// @generated automatically by Diesel CLI.

diesel::table! {
    categories (id) {
        id -> Int8,
        #[max_length = 100]
        name -> Varchar,
        description -> Nullable<Text>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    events (id) {
        id -> Uuid,
        #[sql_name = "type"]
        type_ -> Text,
        data -> Json,
        created_at -> Timestamptz,
        unpublished -> Bool,
    }
}

diesel::table! {
    idempotency_keys (user_id, scope, key) {
        user_id -> Int8,
        #[max_length = 255]
        key -> Varchar,
        request_hash -> Bytea,
        response_status -> Nullable<Int2>,
        response_data -> Nullable<Text>,
        order_id -> Nullable<Int8>,
        created_at -> Timestamptz,
        responded_at -> Nullable<Timestamptz>,
        #[max_length = 20]
        scope -> Varchar,
        claim_token -> Uuid,
    }
}

diesel::table! {
    oauth_states (state_hash) {
        state_hash -> Bytea,
        pkce_verifier -> Text,
        created_at -> Timestamptz,
        used_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    order_items (id) {
        id -> Int8,
        order_id -> Int8,
        product_id -> Int8,
        quantity -> Int4,
        unit_price -> Numeric,
    }
}

diesel::table! {
    orders (id) {
        id -> Int8,
        user_id -> Int8,
        #[max_length = 20]
        status -> Varchar,
        total_amount -> Numeric,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    product_search (product_id) {
        product_id -> Int8,
        search_text -> Text,
    }
}

diesel::table! {
    product_search_version (singleton) {
        singleton -> Bool,
        version -> Int8,
    }
}

diesel::table! {
    products (id) {
        id -> Int8,
        #[max_length = 255]
        name -> Varchar,
        description -> Nullable<Text>,
        price -> Numeric,
        stock_quantity -> Int4,
        category_id -> Nullable<Int8>,
        is_active -> Bool,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        search_text -> Nullable<Text>,
        reserved_quantity -> Int4,
    }
}

diesel::table! {
    refresh_tokens (id) {
        id -> Int8,
        user_id -> Int8,
        family_id -> Uuid,
        token_hash -> Bytea,
        expires_at -> Timestamptz,
        used_at -> Nullable<Timestamptz>,
        revoked_at -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    reservation_items (reservation_id, product_id) {
        reservation_id -> Uuid,
        product_id -> Int8,
        position -> Int2,
        quantity -> Int4,
        unit_price -> Numeric,
    }
}

diesel::table! {
    reservations (id) {
        id -> Uuid,
        user_id -> Int8,
        #[max_length = 20]
        status -> Varchar,
        total_amount -> Numeric,
        expires_at -> Timestamptz,
        order_id -> Nullable<Int8>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    users (id) {
        id -> Int8,
        #[max_length = 255]
        email -> Varchar,
        #[max_length = 255]
        password_hash -> Nullable<Varchar>,
        #[max_length = 100]
        name -> Varchar,
        #[max_length = 20]
        role -> Varchar,
        is_active -> Bool,
        #[max_length = 255]
        google_id -> Nullable<Varchar>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    webhook_attempts (event_id, endpoint_id, attempt) {
        event_id -> Uuid,
        endpoint_id -> Int8,
        attempt -> Int4,
        status_code -> Nullable<Int2>,
        error -> Nullable<Text>,
        duration_ms -> Int4,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    webhook_deliveries (event_id, endpoint_id) {
        event_id -> Uuid,
        endpoint_id -> Int8,
        #[max_length = 10]
        status -> Varchar,
        attempts -> Int4,
        next_attempt_at -> Timestamptz,
        leased_until -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    webhook_endpoints (id) {
        id -> Int8,
        url -> Text,
        events -> Array<Nullable<Text>>,
        description -> Nullable<Text>,
        secret -> Text,
        is_active -> Bool,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::joinable!(idempotency_keys -> orders (order_id));
diesel::joinable!(idempotency_keys -> users (user_id));
diesel::joinable!(order_items -> orders (order_id));
diesel::joinable!(order_items -> products (product_id));
diesel::joinable!(orders -> users (user_id));
diesel::joinable!(product_search -> products (product_id));
diesel::joinable!(products -> categories (category_id));
diesel::joinable!(refresh_tokens -> users (user_id));
diesel::joinable!(reservation_items -> products (product_id));
diesel::joinable!(reservation_items -> reservations (reservation_id));
diesel::joinable!(reservations -> orders (order_id));
diesel::joinable!(reservations -> users (user_id));
diesel::joinable!(webhook_attempts -> events (event_id));
diesel::joinable!(webhook_attempts -> webhook_endpoints (endpoint_id));
diesel::joinable!(webhook_deliveries -> events (event_id));
diesel::joinable!(webhook_deliveries -> webhook_endpoints (endpoint_id));

diesel::allow_tables_to_appear_in_same_query!(
    categories,
    events,
    idempotency_keys,
    oauth_states,
    order_items,
    orders,
    product_search,
    product_search_version,
    products,
    refresh_tokens,
    reservation_items,
    reservations,
    users,
    webhook_attempts,
    webhook_deliveries,
    webhook_endpoints,
);

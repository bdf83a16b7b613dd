//! `/health/live` and `/health/ready` (outside the envelope).

use std::time::Duration;

use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::{actors::user::Ping, startup::AppState};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/health/live").route(web::get().to(live)))
        .service(web::resource("/health/ready").route(web::get().to(ready)));
}

async fn live() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "up"}))
}

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let database = matches!(
        tokio::time::timeout(CHECK_TIMEOUT, state.users.send(Ping)).await,
        Ok(Ok(Ok(())))
    );
    let redis = match &state.redis {
        None => "disabled",
        Some(client) => {
            let ping = async {
                let mut conn = client.get_multiplexed_async_connection().await?;
                redis::cmd("PING").query_async::<String>(&mut conn).await
            };
            match tokio::time::timeout(CHECK_TIMEOUT, ping).await {
                Ok(Ok(_)) => "up",
                _ => "down",
            }
        }
    };
    let up = database && redis != "down";
    let body = json!({
        "status": if up { "up" } else { "down" },
        "checks": {"database": if database { "up" } else { "down" }, "redis": redis},
    });
    if up {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", "5"))
            .json(body)
    }
}

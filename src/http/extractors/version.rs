use std::future::{ready, Ready};

use actix_web::{dev::Payload, FromRequest, HttpRequest};

use crate::{error::AppError, pagination::ApiVersion};

/// The version of the scope that routed the request (`/api` is the latest).
impl FromRequest for ApiVersion {
    type Error = AppError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(Ok(req
            .app_data::<ApiVersion>()
            .copied()
            .unwrap_or(ApiVersion::V2)))
    }
}

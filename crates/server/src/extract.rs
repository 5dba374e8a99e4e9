//! Extractors whose rejections are API errors: axum's own answer `text/plain`, which the
//! OpenAPI document (and every client) expects as `{ "error": { "code", "message" } }`.

use axum::extract::rejection::PathRejection;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::AppError;

/// `axum::extract::Path`, rejecting with 400 `invalid_path_parameter` (a segment that is not
/// UTF-8 once percent-decoded, or does not fit the parameter's type).
#[derive(Debug)]
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Self(value)),
            Err(rejection) => Err(path_rejection(&rejection)),
        }
    }
}

fn path_rejection(rejection: &PathRejection) -> AppError {
    AppError::BadRequest {
        code: "invalid_path_parameter",
        message: rejection.body_text().to_lowercase(),
    }
}

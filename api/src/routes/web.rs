//! The web app (`web/`, built to `server.web_dir`) at `/`: its files, and `index.html` for
//! every other path that is not the API's, so the app's own routes load on a reload.
//!
//! Hashed assets (`/assets/*`, named by their content) are cached for a year; everything
//! else, `index.html` first, is revalidated on every load, so a new build shows at once.
//! `/api/*`, `/v1/*` and other API paths never fall back to the app: an unknown route
//! there is the API's 404 in its JSON shape.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use crate::error::ApiError;
use crate::state::AppState;

/// A year, for files whose name changes with their content.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Everything else: use it only after asking whether it changed.
const REVALIDATE: &str = "no-cache";

/// Paths that belong to the API, never to the app.
fn is_api(path: &str) -> bool {
    ["/api", "/v1", "/health", "/ready"]
        .iter()
        .any(|prefix| path == *prefix || path.starts_with(&format!("{prefix}/")))
}

/// The fallback of the router: the app's file, the app's `index.html`, or the API's 404.
pub async fn serve(State(state): State<Arc<AppState>>, method: Method, uri: Uri) -> Response {
    let path = uri.path();
    if is_api(path) || !(method == Method::GET || method == Method::HEAD) {
        return ApiError::not_found("no such route").into_response();
    }
    let root = PathBuf::from(&state.settings.server.web_dir);
    let Some(relative) = safe_relative(path) else {
        return ApiError::not_found("no such file").into_response();
    };
    let wanted = root.join(&relative);
    if !relative.as_os_str().is_empty() {
        if let Ok(bytes) = tokio::fs::read(&wanted).await {
            let cache = if relative.starts_with("assets") {
                IMMUTABLE
            } else {
                REVALIDATE
            };
            return file(bytes, content_type(&wanted), cache, &method);
        }
        // A missing file with an extension (a stale asset, a typo) is a 404, not the app.
        if relative.extension().is_some() {
            return ApiError::not_found("no such file").into_response();
        }
    }
    match tokio::fs::read(root.join("index.html")).await {
        Ok(bytes) => file(bytes, "text/html; charset=utf-8", REVALIDATE, &method),
        Err(_) => ApiError::not_found("no such route").into_response(),
    }
}

/// The path below the web folder, if it stays below it (no `..`, no absolute parts).
fn safe_relative(path: &str) -> Option<PathBuf> {
    let trimmed = path.trim_start_matches('/');
    if trimmed.contains('\\') || trimmed.contains('%') {
        return None;
    }
    let relative = Path::new(trimmed);
    relative
        .components()
        .all(|c| matches!(c, Component::Normal(_)))
        .then(|| relative.to_path_buf())
}

fn file(
    bytes: Vec<u8>,
    content_type: &'static str,
    cache: &'static str,
    method: &Method,
) -> Response {
    let length = bytes.len();
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        Body::from(bytes)
    };
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "webmanifest" => "application/manifest+json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "woff" => "font/woff",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_paths_below_the_folder_are_served() {
        assert_eq!(
            safe_relative("/assets/app-1a2b.js"),
            Some(PathBuf::from("assets/app-1a2b.js"))
        );
        assert_eq!(safe_relative("/"), Some(PathBuf::new()));
        assert_eq!(
            safe_relative("/dashboard"),
            Some(PathBuf::from("dashboard"))
        );
        assert_eq!(safe_relative("/../etc/passwd"), None);
        assert_eq!(safe_relative("/assets/../../secret"), None);
        assert_eq!(safe_relative("/a/%2e%2e/b"), None);
        assert_eq!(safe_relative("/a\\..\\b"), None);
    }

    #[test]
    fn api_paths_never_fall_back_to_the_app() {
        for path in ["/api", "/api/nope", "/v1/nope", "/health", "/ready"] {
            assert!(is_api(path), "{path}");
        }
        for path in ["/", "/dashboard", "/apiary", "/v1x", "/assets/a.js"] {
            assert!(!is_api(path), "{path}");
        }
    }
}

//! The operator dashboard at `/ui/`: plain HTML, CSS and JavaScript modules compiled
//! into the binary, so every coordinator serves it with no build step or extra server.

use actix_web::http::header;
use actix_web::{web, HttpResponse};

use super::error::ApiError;

/// Only our own files: no inline script or style, no other origin, no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

const INDEX_HTML: &str = include_str!("../../ui/index.html");

/// `(file name under /ui/assets/, content type, body)`.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../ui/app.js"),
    ),
    (
        "api.js",
        "text/javascript; charset=utf-8",
        include_str!("../../ui/api.js"),
    ),
    (
        "graph.js",
        "text/javascript; charset=utf-8",
        include_str!("../../ui/graph.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../../ui/style.css"),
    ),
];

fn page(content_type: &str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, content_type))
        .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        // The files change with the binary; revalidating is cheap on loopback.
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(body)
}

/// `GET /ui/`: the single page; views are chosen by the URL fragment.
pub async fn index() -> HttpResponse {
    page("text/html; charset=utf-8", INDEX_HTML)
}

/// `GET /ui`: relative asset links only resolve under `/ui/`.
pub async fn redirect() -> HttpResponse {
    HttpResponse::PermanentRedirect()
        .insert_header((header::LOCATION, "/ui/"))
        .finish()
}

/// `GET /ui/assets/{name}`.
pub async fn asset(name: web::Path<String>) -> Result<HttpResponse, ApiError> {
    ASSETS
        .iter()
        .find(|(file, _, _)| *file == name.as_str())
        .map(|(_, content_type, body)| page(content_type, body))
        .ok_or_else(|| {
            ApiError::not_found(
                "asset_not_found",
                format!("the dashboard has no asset named {name}"),
            )
        })
}

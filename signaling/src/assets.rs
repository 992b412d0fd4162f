//! The browser library and demo page, embedded at build time in every build
//! (rust-embed's `debug-embed`), so a copied binary serves them on its own.
//! Editing `web/` therefore needs a rebuild to show.

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

#[derive(rust_embed::Embed)]
#[folder = "../web/"]
struct Web;

pub async fn index() -> Response {
    serve("index.html")
}

pub async fn file(Path(path): Path<String>) -> Response {
    serve(&path)
}

fn serve(path: &str) -> Response {
    match Web::get(path) {
        Some(file) => (
            [
                (
                    header::CONTENT_TYPE,
                    content_type(path, file.metadata.mimetype()),
                ),
                (header::CACHE_CONTROL, "no-cache".to_owned()),
            ],
            file.data,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
}

/// `.ts` guesses as MPEG transport stream; our `.ts` files are TypeScript
/// declarations, and a JS module must be served as JavaScript.
fn content_type(path: &str, guessed: &str) -> String {
    if path.ends_with(".ts") {
        "text/plain; charset=utf-8".to_owned()
    } else if path.ends_with(".js") || path.ends_with(".mjs") {
        "text/javascript; charset=utf-8".to_owned()
    } else {
        guessed.to_owned()
    }
}

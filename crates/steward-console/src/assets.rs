//! The console's static files, embedded in the binary (`include_bytes!`): one stylesheet, one
//! script, one icon. Each is served under a name carrying a hash of its content, so it can be
//! cached for a year (`immutable`) and a new daemon's pages fetch the new file.

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use sha2::{Digest, Sha256};
use std::sync::OnceLock;

struct Asset {
    stem: &'static str,
    ext: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

const ASSETS: [Asset; 3] = [
    Asset {
        stem: "console",
        ext: "css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../assets/console.css"),
    },
    Asset {
        stem: "console",
        ext: "js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../assets/console.js"),
    },
    Asset {
        stem: "icon",
        ext: "svg",
        content_type: "image/svg+xml",
        bytes: include_bytes!("../assets/icon.svg"),
    },
];

/// File names with their content hash, in the order of `ASSETS`.
fn names() -> &'static [String; 3] {
    static NAMES: OnceLock<[String; 3]> = OnceLock::new();
    NAMES.get_or_init(|| {
        ASSETS.each_ref().map(|a| {
            let hash = Sha256::digest(a.bytes);
            let short: String = hash.iter().take(6).map(|b| format!("{b:02x}")).collect();
            format!("{}.{short}.{}", a.stem, a.ext)
        })
    })
}

fn url(index: usize) -> String {
    format!("/ui/assets/{}", names()[index])
}

/// URL of the stylesheet.
pub fn css() -> String {
    url(0)
}

/// URL of the script.
pub fn js() -> String {
    url(1)
}

/// URL of the icon.
pub fn icon() -> String {
    url(2)
}

/// `GET /ui/assets/{name}`: an embedded file by its hashed name, cached for a year.
pub async fn serve(name: web::Path<String>) -> HttpResponse {
    let Some(index) = names().iter().position(|n| *n == *name) else {
        return HttpResponse::NotFound()
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .body("no such asset");
    };
    let asset = &ASSETS[index];
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, asset.content_type))
        .insert_header((header::CACHE_CONTROL, "public, max-age=31536000, immutable"))
        .body(asset.bytes)
}

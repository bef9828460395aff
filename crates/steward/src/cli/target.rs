//! Where the daemon is and which token to present. Flags and `STEWARD_*` variables win;
//! otherwise the files the daemon keeps in its data directory (`listen.addr`, `admin.token`)
//! are read, and the built-in address is the last resort. Nothing here talks to the network.

use reqwest::Url;
use secrecy::SecretString;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use super::client::CliError;
use crate::files::admin_token_path;

/// Where the daemon listens when nothing else says (the default of `serve --listen`).
pub const DEFAULT_URL: &str = "http://127.0.0.1:7878";

/// Where the token came from, to make a 401 actionable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// `--token` or `STEWARD_ADMIN_TOKEN`.
    Given,
    /// The token file of a data directory.
    File(PathBuf),
}

/// The daemon's base URL: `url` if given, else `<data_dir>/listen.addr`, else
/// [`DEFAULT_URL`].
pub fn base_url(url: Option<&str>, data_dir: &Path) -> Result<Url, CliError> {
    if let Some(url) = url {
        return parse_url(url);
    }
    let path = data_dir.join("listen.addr");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let addr: SocketAddr = text.trim().parse().map_err(|_| {
                CliError::Usage(format!(
                    "{} does not hold an IP:PORT address; pass --url",
                    path.display()
                ))
            })?;
            parse_url(&format!("http://{}", reachable(addr)))
        }
        Err(e) if e.kind() == ErrorKind::NotFound => parse_url(DEFAULT_URL),
        Err(e) => Err(CliError::Usage(format!(
            "cannot read {}: {e}; pass --url",
            path.display()
        ))),
    }
}

/// The admin token: `token` if given, else the daemon's token file in `data_dir`.
pub fn admin_token(
    token: Option<&str>,
    data_dir: &Path,
) -> Result<(SecretString, TokenSource), CliError> {
    if let Some(token) = token {
        let token = token.trim();
        if token.is_empty() {
            return Err(CliError::Usage(
                "the admin token given with --token or STEWARD_ADMIN_TOKEN is empty".into(),
            ));
        }
        return Ok((SecretString::from(token.to_owned()), TokenSource::Given));
    }
    let path = admin_token_path(data_dir);
    let text = std::fs::read_to_string(&path).map_err(|e| CliError::Token {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(CliError::Token {
            path,
            reason: "the file is empty".into(),
        });
    }
    Ok((
        SecretString::from(token.to_owned()),
        TokenSource::File(path),
    ))
}

/// Parses a user-given URL; `HOST:PORT` without a scheme means `http://HOST:PORT`.
fn parse_url(raw: &str) -> Result<Url, CliError> {
    let raw = raw.trim();
    let with_scheme = if raw.contains("://") {
        raw.to_owned()
    } else {
        format!("http://{raw}")
    };
    let url = Url::parse(&with_scheme)
        .map_err(|e| CliError::Usage(format!("invalid --url {raw:?}: {e}")))?;
    match url.scheme() {
        "http" => {}
        "https" => {
            return Err(CliError::Usage(
                "this steward CLI speaks plain HTTP only; reach an https endpoint through a \
                 local tunnel or proxy"
                    .into(),
            ))
        }
        other => {
            return Err(CliError::Usage(format!(
                "invalid --url {raw:?}: scheme {other:?} is not http"
            )))
        }
    }
    if url.host().is_none() || url.query().is_some() || url.fragment().is_some() {
        return Err(CliError::Usage(format!(
            "invalid --url {raw:?}: expected http://HOST:PORT[/PATH]"
        )));
    }
    Ok(url)
}

/// A listen address a client can connect to: a daemon bound to every interface
/// (`0.0.0.0`, `::`) is reached over loopback.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), addr.port())
        }
        _ => addr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn a_url_flag_wins_and_may_omit_the_scheme() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("listen.addr"), "127.0.0.1:9").expect("write");
        let url = base_url(Some("localhost:8080"), dir.path()).expect("url");
        assert_eq!(url.as_str(), "http://localhost:8080/");
        let url = base_url(Some("http://10.0.0.1:1/steward"), dir.path()).expect("url");
        assert_eq!(url.as_str(), "http://10.0.0.1:1/steward");
    }

    #[test]
    fn listen_addr_is_used_when_present_else_the_default() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = base_url(None, dir.path()).expect("url");
        assert_eq!(url.as_str(), "http://127.0.0.1:7878/");
        std::fs::write(dir.path().join("listen.addr"), "127.0.0.1:41234\n").expect("write");
        let url = base_url(None, dir.path()).expect("url");
        assert_eq!(url.as_str(), "http://127.0.0.1:41234/");
        std::fs::write(dir.path().join("listen.addr"), "0.0.0.0:5000").expect("write");
        let url = base_url(None, dir.path()).expect("url");
        assert_eq!(url.as_str(), "http://127.0.0.1:5000/");
        std::fs::write(dir.path().join("listen.addr"), "[::]:5000").expect("write");
        let url = base_url(None, dir.path()).expect("url");
        assert_eq!(url.as_str(), "http://[::1]:5000/");
        std::fs::write(dir.path().join("listen.addr"), "garbage").expect("write");
        let err = base_url(None, dir.path()).expect_err("garbage is refused");
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn unsupported_urls_are_usage_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        for bad in [
            "https://example.com",
            "ftp://x",
            "http://",
            "http://h:1/?q=1",
        ] {
            let err = base_url(Some(bad), dir.path()).expect_err(bad);
            assert_eq!(err.exit_code(), 2, "{bad}");
        }
    }

    #[test]
    fn the_token_comes_from_the_flag_or_the_trimmed_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = admin_token(None, dir.path()).expect_err("no file");
        assert_eq!(err.exit_code(), 2);
        assert!(
            err.to_string()
                .contains(&dir.path().join("admin.token").display().to_string()),
            "{err}"
        );
        std::fs::write(dir.path().join("admin.token"), "abc\n").expect("write");
        let (token, source) = admin_token(None, dir.path()).expect("token");
        assert_eq!(token.expose_secret(), "abc");
        assert_eq!(source, TokenSource::File(dir.path().join("admin.token")));
        let (token, source) = admin_token(Some("given"), dir.path()).expect("token");
        assert_eq!(token.expose_secret(), "given");
        assert_eq!(source, TokenSource::Given);
        std::fs::write(dir.path().join("admin.token"), "\n").expect("write");
        assert_eq!(
            admin_token(None, dir.path())
                .expect_err("empty")
                .exit_code(),
            2
        );
    }
}

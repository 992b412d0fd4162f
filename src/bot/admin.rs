//! The few admin API calls the bot makes (`PUT`/`DELETE
//! /admin/netlab/room/{room}`), over plain HTTP/1.1. One request per
//! connection with `Connection: close` needs no more than this; a hyper
//! client would change hyper's features for the whole workspace build.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response read: the admin API answers with small JSON bodies.
const MAX_RESPONSE: u64 = 1024 * 1024;
const TIMEOUT: Duration = Duration::from_secs(10);

/// `http://HOST:PORT[/prefix]` of the server's HTTP listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminUrl {
    host_port: String,
    prefix: String,
}

impl AdminUrl {
    pub fn parse(url: &str) -> Result<AdminUrl, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("{url:?}: the admin URL must start with http://"))?;
        let (host_port, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if host_port.is_empty() {
            return Err(format!("{url:?}: no host"));
        }
        let host_port = if host_port.contains(':') {
            host_port.to_owned()
        } else {
            format!("{host_port}:80")
        };
        Ok(AdminUrl {
            host_port,
            prefix: path.trim_end_matches('/').to_owned(),
        })
    }

    /// The HTTP listener behind a signaling URL `ws://HOST:PORT/ws`.
    pub fn from_signaling(ws_url: &str) -> Result<AdminUrl, String> {
        let rest = ws_url.strip_prefix("ws://").ok_or_else(|| {
            format!("{ws_url:?}: cannot derive the admin URL (not ws://); give --admin-url")
        })?;
        let host_port = rest.split('/').next().unwrap_or(rest);
        AdminUrl::parse(&format!("http://{host_port}"))
    }

    /// Sends `method path` with an optional JSON body and bearer token;
    /// returns the status and body.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> Result<(u16, String), String> {
        tokio::time::timeout(TIMEOUT, self.request_inner(method, path, token, body))
            .await
            .map_err(|_| format!("{method} {path}: no answer within {TIMEOUT:?}"))?
    }

    async fn request_inner(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> Result<(u16, String), String> {
        let mut stream = TcpStream::connect(&self.host_port)
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", self.host_port))?;
        let body = body.unwrap_or("");
        let mut head = format!(
            "{method} {}{path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.prefix,
            self.host_port,
            body.len()
        );
        if !body.is_empty() {
            head.push_str("Content-Type: application/json\r\n");
        }
        if let Some(token) = token {
            head.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        head.push_str("\r\n");
        stream
            .write_all(head.as_bytes())
            .await
            .and(stream.write_all(body.as_bytes()).await)
            .map_err(|e| format!("{method} {path}: {e}"))?;
        let mut raw = Vec::new();
        (&mut stream)
            .take(MAX_RESPONSE)
            .read_to_end(&mut raw)
            .await
            .map_err(|e| format!("{method} {path}: {e}"))?;
        parse_response(&raw).ok_or_else(|| format!("{method} {path}: not an HTTP response"))
    }
}

/// Status and body of a complete `Connection: close` response (a chunked
/// body is returned as it came: the bot only shows it in error messages).
fn parse_response(raw: &[u8]) -> Option<(u16, String)> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head
        .lines()
        .next()?
        .strip_prefix("HTTP/1.")?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some((status, body.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let a = AdminUrl::parse("http://127.0.0.1:8080/").unwrap();
        assert_eq!(
            (a.host_port.as_str(), a.prefix.as_str()),
            ("127.0.0.1:8080", "")
        );
        let b = AdminUrl::parse("http://game.example/rt").unwrap();
        assert_eq!(
            (b.host_port.as_str(), b.prefix.as_str()),
            ("game.example:80", "/rt")
        );
        assert!(AdminUrl::parse("https://x").is_err());
        assert!(AdminUrl::parse("http:///x").is_err());
        let c = AdminUrl::from_signaling("ws://127.0.0.1:9000/ws").unwrap();
        assert_eq!(c.host_port, "127.0.0.1:9000");
        assert!(AdminUrl::from_signaling("wss://x/ws").is_err());
    }

    #[test]
    fn responses() {
        assert_eq!(
            parse_response(b"HTTP/1.1 404 Not Found\r\nA: b\r\n\r\n{\"x\":1}"),
            Some((404, "{\"x\":1}".into()))
        );
        assert_eq!(parse_response(b"garbage"), None);
        assert_eq!(parse_response(b"SMTP 200 ok\r\n\r\n"), None);
    }
}

//! Every request passes here: the token (when one is set), then, for a
//! POST, the read-only switch and the same-origin check.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};

use super::Console;
use super::pages::error_page;

/// The cookie that keeps the token in a browser (followed by `_` and the
/// port, since cookies are shared by every port of a host).
const COOKIE: &str = "es_console_token";

/// Checks a request before its handler runs.
pub(super) async fn check(
    State(console): State<Console>,
    request: Request,
    next: Next,
) -> Response {
    match console.inner.token.as_deref() {
        Some(token) => {
            if let Some(response) = require_token(token, console.inner.port, &request) {
                return response;
            }
        }
        // Without a token the console only answers requests addressed to
        // this machine by name: a page of another site whose name was made
        // to resolve to 127.0.0.1 (DNS rebinding) sends its own name.
        None if !addressed_to_loopback(request.headers()) => {
            return error_page(
                StatusCode::MISDIRECTED_REQUEST,
                "This console only answers requests for localhost or a loopback address.",
            );
        }
        None => {}
    }
    if request.method() == Method::POST {
        if console.read_only() {
            return error_page(
                StatusCode::FORBIDDEN,
                "The console is read-only: it takes no actions.",
            );
        }
        if !same_origin(request.headers()) {
            return error_page(
                StatusCode::FORBIDDEN,
                "Actions are only taken from the console's own pages (the request's Origin is not this console).",
            );
        }
    }
    next.run(request).await
}

/// `None` when the request carries the token; otherwise the response: a
/// redirect that keeps a token given in the query as a cookie, or 401.
fn require_token(token: &str, port: u16, request: &Request) -> Option<Response> {
    let headers = request.headers();
    let cookie_name = format!("{COOKIE}_{port}");
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(&cookie_name)?.strip_prefix('='));
    if [bearer, cookie]
        .into_iter()
        .flatten()
        .any(|given| equal(given, token))
    {
        return None;
    }
    let query = request.uri().query().unwrap_or("");
    let given = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
        .and_then(percent_decode);
    if request.method() == Method::GET && given.is_some_and(|given| equal(&given, token)) {
        let rest: Vec<&str> = query
            .split('&')
            .filter(|pair| !pair.starts_with("token="))
            .collect();
        // One leading slash: `//host/...` would leave the console.
        let path = format!("/{}", request.uri().path().trim_start_matches('/'));
        let target = if rest.is_empty() {
            path
        } else {
            format!("{path}?{}", rest.join("&"))
        };
        let mut response = Redirect::to(&target).into_response();
        if let Ok(value) =
            format!("{cookie_name}={token}; HttpOnly; SameSite=Strict; Path=/").parse()
        {
            response.headers_mut().insert(header::SET_COOKIE, value);
        }
        return Some(response);
    }
    Some(error_page(
        StatusCode::UNAUTHORIZED,
        "This console needs its token: open it once as /?token=..., or send Authorization: Bearer ...",
    ))
}

/// A query parameter's value decoded (`%XX` and `+`), or `None` when it is
/// not valid percent-encoded UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.bytes();
    while let Some(byte) = rest.next() {
        match byte {
            b'%' => {
                let high = char::from(rest.next()?).to_digit(16)?;
                let low = char::from(rest.next()?).to_digit(16)?;
                bytes.push(u8::try_from(high * 16 + low).ok()?);
            }
            b'+' => bytes.push(b' '),
            other => bytes.push(other),
        }
    }
    String::from_utf8(bytes).ok()
}

/// Whether the request's `Host` names this machine: `localhost` or a
/// loopback address, with any port.
fn addressed_to_loopback(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Compares without stopping at the first difference.
fn equal(given: &str, token: &str) -> bool {
    given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Whether a POST comes from a page of this console: its `Origin` (or,
/// without one, its `Referer`) names the host the request was sent to.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let expected = format!("http://{host}");
    if let Some(origin) = headers.get(header::ORIGIN) {
        return origin.to_str().is_ok_and(|origin| origin == expected);
    }
    headers
        .get(header::REFERER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|referer| referer == expected || referer.starts_with(&format!("{expected}/")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(name.clone(), value.parse().unwrap());
        }
        map
    }

    #[test]
    fn origins_must_name_the_console() {
        let host = (header::HOST, "127.0.0.1:7070");
        assert!(same_origin(&headers(&[
            host.clone(),
            (header::ORIGIN, "http://127.0.0.1:7070")
        ])));
        assert!(!same_origin(&headers(&[
            host.clone(),
            (header::ORIGIN, "http://evil.example")
        ])));
        assert!(same_origin(&headers(&[
            host.clone(),
            (header::REFERER, "http://127.0.0.1:7070/projection?name=x")
        ])));
        assert!(!same_origin(&headers(&[
            host.clone(),
            (header::REFERER, "http://127.0.0.1:70700/")
        ])));
        assert!(!same_origin(&headers(&[host])));
    }

    #[test]
    fn only_loopback_names_are_this_machine() {
        for host in [
            "127.0.0.1:7070",
            "localhost:7070",
            "LOCALHOST",
            "[::1]:7070",
            "127.1.2.3",
        ] {
            assert!(
                addressed_to_loopback(&headers(&[(header::HOST, host)])),
                "{host}"
            );
        }
        for host in [
            "evil.example:7070",
            "10.0.0.1:7070",
            "localhost.evil.example",
            "[::2]:1",
        ] {
            assert!(
                !addressed_to_loopback(&headers(&[(header::HOST, host)])),
                "{host}"
            );
        }
        assert!(!addressed_to_loopback(&HeaderMap::new()));
    }

    #[test]
    fn query_values_are_decoded() {
        assert_eq!(percent_decode("a%2Bb+c%25").as_deref(), Some("a+b c%"));
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%FF"), None);
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(equal("secret", "secret"));
        assert!(!equal("secre", "secret"));
        assert!(!equal("secreT", "secret"));
    }
}

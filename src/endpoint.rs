//! Rules about endpoint URLs shared by the config check, the API client and the CVM metadata
//! client, so each rule exists once: which hosts count as loopback (the only ones allowed
//! plain `http://` for signed requests) and how a base URL is normalised for relative joins.

use reqwest::Url;

/// `127.0.0.0/8`, `::1`, `::ffff:127.x.y.z` (IPv4-mapped loopback) and `localhost` (any case).
/// Signed requests may go over plain `http://` only to these: nothing else can read them there.
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|ip| ip.is_loopback())
        }
        None => false,
    }
}

/// Appends a final `/` to the path if it lacks one. A base URL such as the metadata endpoint is
/// joined with relative paths (`cam/security-credentials/`), and without the slash `join`
/// would replace its last segment instead of descending into it.
pub fn with_trailing_slash(mut url: Url) -> Url {
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback(text: &str) -> bool {
        is_loopback(&Url::parse(text).unwrap())
    }

    #[test]
    fn loopback_hosts() {
        for yes in [
            "http://127.0.0.1:9000/",
            "http://127.1.2.3/",
            "http://localhost:1234",
            "http://LOCALHOST",
            "http://[::1]:8080/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:127.9.9.9]:80/",
        ] {
            assert!(loopback(yes), "{yes}");
        }
        for no in [
            "http://10.0.0.1/",
            "http://128.0.0.1/",
            "http://[::2]/",
            "http://[::ffff:10.0.0.1]/",
            "http://localhost.example.com/",
            "http://example.com/",
        ] {
            assert!(!loopback(no), "{no}");
        }
    }

    #[test]
    fn trailing_slash_is_added_once() {
        let url = |text: &str| with_trailing_slash(Url::parse(text).unwrap()).to_string();
        assert_eq!(url("http://127.0.0.1:9/meta"), "http://127.0.0.1:9/meta/");
        assert_eq!(url("http://127.0.0.1:9/meta/"), "http://127.0.0.1:9/meta/");
        assert_eq!(url("http://h"), "http://h/");
    }
}

//! Which Tencent Cloud API an account talks to (`[api] service`): its signing service name,
//! its `X-TC-Version` and its default endpoint. One [`super::Client`] sends to either; the
//! backend decides which actions it calls.
//!
//! The endpoint follows the same rules for both (`[api] endpoint`: https, or http on a
//! loopback host); when it is not configured, each service has its own default. An endpoint
//! that plainly names the other service (`yunjing.tencentcloudapi.com` for `cwp`) is a
//! mistake `check` can name ([`ApiService::endpoint_problem`]): the API would refuse every
//! signature scoped to another service.

use reqwest::Url;

/// A CWP API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ApiService {
    /// The older API, with the open-port task workflow (the default).
    #[default]
    Yunjing,
    /// The live API: machines with `AgentStatus`, asset ports with bind address and user.
    Cwp,
}

impl ApiService {
    /// Both, for listing what may be written.
    pub const ALL: [ApiService; 2] = [ApiService::Yunjing, ApiService::Cwp];

    /// The config word, which is also the signing service name and the endpoint's first
    /// label.
    pub fn name(self) -> &'static str {
        match self {
            ApiService::Yunjing => "yunjing",
            ApiService::Cwp => "cwp",
        }
    }

    /// The service named `word` as the config writes it.
    pub fn from_name(word: &str) -> Option<ApiService> {
        Self::ALL.into_iter().find(|s| s.name() == word)
    }

    /// The TC3 signing service (`Date/service/tc3_request`).
    pub fn signing_service(self) -> &'static str {
        self.name()
    }

    /// `X-TC-Version`: both are `2018-02-28`.
    pub fn version(self) -> &'static str {
        "2018-02-28"
    }

    /// The endpoint used when `[api] endpoint` is not set.
    pub fn default_endpoint(self) -> &'static str {
        match self {
            ApiService::Yunjing => "https://yunjing.tencentcloudapi.com",
            ApiService::Cwp => "https://cwp.tencentcloudapi.com",
        }
    }

    /// The endpoint: the configured one, else the default.
    pub fn endpoint(self, configured: Option<&Url>) -> Url {
        configured.cloned().unwrap_or_else(|| {
            Url::parse(self.default_endpoint()).expect("the default endpoints are URLs")
        })
    }

    /// What is wrong with sending this service's requests to `endpoint`, when its host is a
    /// Tencent Cloud API host of the other service (`<service>[.<region>].tencentcloudapi.com`,
    /// `.intl.` too). Any other host (the simulator, a proxy name) is the operator's choice.
    pub fn endpoint_problem(self, endpoint: &Url) -> Option<String> {
        let host = endpoint.host_str()?.to_ascii_lowercase();
        let host = host.strip_suffix('.').unwrap_or(&host);
        let stem = host.strip_suffix(".tencentcloudapi.com")?;
        let first = stem.split('.').next()?;
        let other = Self::ALL
            .into_iter()
            .find(|s| *s != self && s.name() == first)?;
        Some(format!(
            "the endpoint {host} is {other}'s, but this account's service is {this}: requests \
             signed for {this} would all be refused; write endpoint = \"{default}\" (or leave \
             it out), or service = \"{other}\"",
            other = other.name(),
            this = self.name(),
            default = self.default_endpoint(),
        ))
    }
}

impl std::fmt::Display for ApiService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_service_has_its_name_version_and_endpoint() {
        assert_eq!(ApiService::default(), ApiService::Yunjing);
        for (service, name, host) in [
            (
                ApiService::Yunjing,
                "yunjing",
                "yunjing.tencentcloudapi.com",
            ),
            (ApiService::Cwp, "cwp", "cwp.tencentcloudapi.com"),
        ] {
            assert_eq!(service.name(), name);
            assert_eq!(service.signing_service(), name);
            assert_eq!(service.version(), "2018-02-28");
            assert_eq!(ApiService::from_name(name), Some(service));
            assert_eq!(service.endpoint(None).host_str(), Some(host));
            let simulator = Url::parse("http://127.0.0.1:9000/").unwrap();
            assert_eq!(service.endpoint(Some(&simulator)), simulator);
        }
        assert_eq!(ApiService::from_name("CWP"), None);
        assert_eq!(ApiService::from_name(""), None);
        // The yunjing default is the one the config has always used.
        assert_eq!(
            ApiService::Yunjing.default_endpoint(),
            crate::config::DEFAULT_ENDPOINT
        );
    }

    #[test]
    fn an_endpoint_of_the_other_service_is_named() {
        let url = |s: &str| Url::parse(s).unwrap();
        for wrong in [
            "https://yunjing.tencentcloudapi.com",
            "https://YUNJING.tencentcloudapi.com.",
            "https://yunjing.ap-guangzhou.tencentcloudapi.com",
            "https://yunjing.intl.tencentcloudapi.com:443/",
        ] {
            let problem = ApiService::Cwp.endpoint_problem(&url(wrong));
            let problem = problem.unwrap_or_else(|| panic!("{wrong}: no problem"));
            assert!(problem.contains("service = \"yunjing\""), "{problem}");
            assert!(
                problem.contains("https://cwp.tencentcloudapi.com"),
                "{problem}"
            );
        }
        assert!(
            ApiService::Yunjing
                .endpoint_problem(&url("https://cwp.intl.tencentcloudapi.com"))
                .is_some()
        );
        for fine in [
            "https://cwp.tencentcloudapi.com",
            "https://cwp.ap-shanghai.tencentcloudapi.com",
            "https://cwp.intl.tencentcloudapi.com",
            "http://127.0.0.1:9000/",
            "https://yunjing.example.com",
            "https://tencentcloudapi.com",
            "https://notyunjing.tencentcloudapi.com",
        ] {
            assert_eq!(ApiService::Cwp.endpoint_problem(&url(fine)), None, "{fine}");
        }
    }
}

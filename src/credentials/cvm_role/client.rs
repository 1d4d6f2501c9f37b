//! The metadata service client of one instance role: [`CvmRole::fetch`] asks for the role
//! name (unless configured), then for its credentials.

use reqwest::Url;

use super::answer::parse_credentials;
use super::{
    CONNECT_TIMEOUT, CvmRoleError, MAX_ANSWER_BYTES, MAX_ROLE_NAME_BYTES, REQUEST_TIMEOUT,
    RoleCredentials,
};
use crate::api::body::{BodyError, read_capped};
use crate::endpoint::with_trailing_slash;
use crate::tls::{TlsTrust, certificate_problem};

/// A metadata service client for one instance role. Cheap to clone.
#[derive(Debug, Clone)]
pub struct CvmRole {
    http: reqwest::Client,
    /// Base URL, ending with `/` (`http://metadata.tencentyun.com/latest/meta-data/`).
    metadata_endpoint: Url,
    /// The role; `None`: ask `cam/security-credentials/` at each fetch.
    role: Option<String>,
}

impl CvmRole {
    /// A client for `metadata_endpoint` (`http` or `https`; a missing final `/` is added).
    /// `role = None` asks the service which role the instance has. Timeouts:
    /// [`CONNECT_TIMEOUT`], [`REQUEST_TIMEOUT`]. An https endpoint is checked against the
    /// system's CA store; the daemon uses [`CvmRole::with_trust`].
    pub fn new(metadata_endpoint: Url, role: Option<String>) -> Result<Self, CvmRoleError> {
        Self::with_trust(metadata_endpoint, role, &TlsTrust::system())
    }

    /// As [`CvmRole::new`], trusting the CAs of `trust` for an https endpoint (the daemon's:
    /// the system's store and `[api] ca_file`, as every client).
    pub fn with_trust(
        metadata_endpoint: Url,
        role: Option<String>,
        trust: &TlsTrust,
    ) -> Result<Self, CvmRoleError> {
        let setup = |endpoint: &Url, reason: &str| CvmRoleError::Setup {
            endpoint: endpoint.to_string(),
            reason: reason.to_owned(),
        };
        if !matches!(metadata_endpoint.scheme(), "http" | "https") {
            return Err(setup(
                &metadata_endpoint,
                "the scheme must be http:// or https://",
            ));
        }
        if metadata_endpoint.host_str().is_none_or(str::is_empty) {
            return Err(setup(&metadata_endpoint, "no host name"));
        }
        if metadata_endpoint.query().is_some() || metadata_endpoint.fragment().is_some() {
            return Err(setup(
                &metadata_endpoint,
                "remove the query or fragment (`?…`, `#…`)",
            ));
        }
        let metadata_endpoint = with_trailing_slash(metadata_endpoint);
        let role = role.map(|r| r.trim().to_owned()).filter(|r| !r.is_empty());
        if let Some(role) = &role
            && !valid_role_name(role)
        {
            return Err(setup(
                &metadata_endpoint,
                "the role name is empty, longer than 128 bytes, or contains whitespace, \
                 control characters or `/`",
            ));
        }
        let http = trust
            .client(&metadata_endpoint, |builder| {
                builder
                    .connect_timeout(CONNECT_TIMEOUT)
                    .timeout(REQUEST_TIMEOUT)
                    .no_proxy()
                    .redirect(reqwest::redirect::Policy::none())
                    .user_agent(concat!("cwp-portwatch/", env!("CARGO_PKG_VERSION")))
            })
            .map_err(|e| setup(&metadata_endpoint, &e.to_string()))?;
        Ok(CvmRole {
            http,
            metadata_endpoint,
            role,
        })
    }

    /// The base URL, ending with `/`.
    pub fn metadata_endpoint(&self) -> &Url {
        &self.metadata_endpoint
    }

    /// The configured role, if any.
    pub fn role(&self) -> Option<&str> {
        self.role.as_deref()
    }

    /// Fetches the current credentials: asks for the role name first unless it was configured.
    pub async fn fetch(&self) -> Result<RoleCredentials, CvmRoleError> {
        let role = match &self.role {
            Some(role) => role.clone(),
            None => self.discover_role().await?,
        };
        let url = self.role_url(&role)?;
        let body = self.get(&url, true).await?;
        let credentials = parse_credentials(&url, &body)?;
        Ok(RoleCredentials {
            role,
            ..credentials
        })
    }

    /// `cam/security-credentials/`: the role name is the first non-empty line.
    async fn discover_role(&self) -> Result<String, CvmRoleError> {
        let url = self.list_url()?;
        let body = self.get(&url, false).await?;
        parse_role_list(&url, &body)
    }

    pub(super) fn list_url(&self) -> Result<Url, CvmRoleError> {
        self.metadata_endpoint
            .join("cam/security-credentials/")
            .map_err(|e| CvmRoleError::Setup {
                endpoint: self.metadata_endpoint.to_string(),
                reason: e.to_string(),
            })
    }

    pub(super) fn role_url(&self, role: &str) -> Result<Url, CvmRoleError> {
        let mut url = self.list_url()?;
        url.path_segments_mut()
            .map_err(|()| CvmRoleError::Setup {
                endpoint: self.metadata_endpoint.to_string(),
                reason: "the URL cannot have a path".to_owned(),
            })?
            .pop_if_empty()
            .push(role);
        Ok(url)
    }

    /// One GET; the body of a 2xx answer. `for_role`: a 404 means that role is not the
    /// instance's, otherwise that the instance has no role.
    async fn get(&self, url: &Url, for_role: bool) -> Result<Vec<u8>, CvmRoleError> {
        let unreachable = |e: reqwest::Error| CvmRoleError::Unreachable {
            url: url.to_string(),
            reason: match certificate_problem(&e, url.host_str().unwrap_or_default()) {
                Some(problem) => format!("TLS certificate refused: {problem}"),
                None => transport_reason(&e),
            },
        };
        let response = self
            .http
            .get(url.clone())
            .send()
            .await
            .map_err(unreachable)?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            let detail = if for_role {
                "404: the instance has no such role; check [credentials] role, or leave it out to \
                 use the instance's role"
            } else {
                "404: the instance has no CAM role; bind one in the CVM console, or choose \
                 another [credentials] source"
            };
            return Err(CvmRoleError::NoRole {
                url: url.to_string(),
                detail: detail.to_owned(),
            });
        }
        if !status.is_success() {
            return Err(CvmRoleError::BadAnswer {
                url: url.to_string(),
                problem: format!("HTTP status {status}"),
            });
        }
        read_capped(response, MAX_ANSWER_BYTES)
            .await
            .map_err(|e| match e {
                BodyError::Read(e) => unreachable(e),
                too_large @ BodyError::TooLarge { .. } => CvmRoleError::BodyTooLarge {
                    url: url.to_string(),
                    reason: too_large.to_string(),
                },
            })
    }
}

/// A role name we can put in a URL path segment and a log line: the CAM rule, shared with
/// `check` so that it refuses what [`CvmRole::new`] would refuse at run time.
pub(super) fn valid_role_name(role: &str) -> bool {
    crate::credentials::is_cam_role_name(role) && role.len() <= MAX_ROLE_NAME_BYTES
}

/// A short reason for a transport error (the URL is already in the message).
fn transport_reason(e: &reqwest::Error) -> String {
    let mut root: &dyn std::error::Error = e;
    while let Some(source) = root.source() {
        root = source;
    }
    if e.is_timeout() {
        format!("no answer within {} s", REQUEST_TIMEOUT.as_secs())
    } else if e.is_connect() {
        format!("cannot connect: {root}")
    } else {
        root.to_string()
    }
}

/// The role list answer (`cam/security-credentials/`): the role name is its first non-empty
/// line. Public (hidden) for the fuzz targets (`fuzz/`), which call this very decoder.
#[doc(hidden)]
pub fn parse_role_list(url: &Url, body: &[u8]) -> Result<String, CvmRoleError> {
    let text = std::str::from_utf8(body).map_err(|_| CvmRoleError::BadAnswer {
        url: url.to_string(),
        problem: "the role list is not UTF-8 text".to_owned(),
    })?;
    let Some(role) = text.lines().map(str::trim).find(|line| !line.is_empty()) else {
        return Err(CvmRoleError::NoRole {
            url: url.to_string(),
            detail: "the role list is empty; bind a CAM role to the instance in the CVM \
                     console, or choose another [credentials] source"
                .to_owned(),
        });
    };
    if !valid_role_name(role) {
        return Err(CvmRoleError::BadAnswer {
            url: url.to_string(),
            problem: "the role name is longer than 128 bytes or contains control characters \
                      or `/`"
                .to_owned(),
        });
    }
    Ok(role.to_owned())
}

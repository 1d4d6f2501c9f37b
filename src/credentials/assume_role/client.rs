//! One `AssumeRole` round: the STS client of one role ([`AssumeRole`]), its base credentials
//! fetched again for every call, and the checks of the answer ([`parse_answer`]).

use std::sync::Arc;

use secrecy::SecretString;
use serde_json::{Value, json};

use super::{
    ASSUME_ROLE_ACTION, AssumeRoleError, BaseCredentials, RoleRequest, STS_SERVICE, STS_VERSION,
    StsOptions,
};
use crate::api::{ApiError, Client, ClientOptions, ErrorClass};
use crate::clock::unix_now;
use crate::credentials::cvm_role::{MAX_SECRET_ID_BYTES, credential_field, expiry};
use crate::credentials::{
    CredentialError, Credentials, MAX_SECRET_CHARS, MAX_TOKEN_CHARS, Resolved, resolve,
};
use crate::tls::TlsTrust;

/// One set of temporary credentials from `AssumeRole`. `Debug` never shows the key or token.
#[derive(Debug, Clone)]
pub struct AssumedCredentials {
    /// The credentials; `token` is always `Some`.
    pub credentials: Credentials,
    /// `ExpiredTime`: when they stop working, Unix seconds (STS's clock).
    pub expires_at: i64,
    /// STS's `RequestId`, for support.
    pub request_id: String,
}

/// An STS client for one role. Cheap to clone; clones share the connection pool and the
/// learned clock offset.
#[derive(Debug, Clone)]
pub struct AssumeRole {
    request: RoleRequest,
    base: BaseCredentials,
    sts: Client,
    /// One call at a time: the client's credentials are set to the base ones just before it.
    calling: Arc<tokio::sync::Mutex<()>>,
}

impl AssumeRole {
    /// A client for `request` at `options.endpoint`, signing with `base`, trusting the
    /// system's CA store. No I/O but reading that store.
    pub fn new(
        request: RoleRequest,
        options: StsOptions,
        base: BaseCredentials,
    ) -> Result<Self, AssumeRoleError> {
        Self::with_trust(request, options, base, &TlsTrust::system())
    }

    /// As [`AssumeRole::new`], trusting the CAs of `trust` (the daemon's: the system's store
    /// and `[api] ca_file`, as the API client).
    pub fn with_trust(
        request: RoleRequest,
        options: StsOptions,
        base: BaseCredentials,
        trust: &TlsTrust,
    ) -> Result<Self, AssumeRoleError> {
        // Replaced by the base credentials before every call; never used to sign.
        let unset = Credentials {
            secret_id: String::new(),
            secret_key: SecretString::from(String::new()),
            token: None,
        };
        let sts = Client::for_service(
            ClientOptions {
                endpoint: options.endpoint,
                region: options.region,
                timeout: options.timeout,
                max_idle_connections: 1,
            },
            unset,
            trust,
            STS_SERVICE,
            STS_VERSION,
        )
        .map_err(AssumeRoleError::Setup)?
        // Its answers carry the temporary secrets: no error may quote them.
        .hiding_answer_bodies();
        Ok(AssumeRole {
            request,
            base,
            sts,
            calling: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    /// What this asks for.
    pub fn request(&self) -> &RoleRequest {
        &self.request
    }

    /// Now on STS's clock (as learned from its `Date` headers), Unix seconds: `ExpiredTime` is
    /// on that clock, so a local clock that drifts does not shift the renewal.
    pub fn server_now(&self) -> i64 {
        unix_now().saturating_add(self.sts.clock_offset_ms() / 1000)
    }

    /// The base credentials now.
    async fn base_credentials(&self) -> Result<Credentials, AssumeRoleError> {
        match &self.base {
            BaseCredentials::Fixed(credentials) => Ok(credentials.clone()),
            BaseCredentials::Reread { settings, env } => match resolve(settings, env) {
                Ok(Resolved::Static(credentials, _)) => Ok(credentials),
                Ok(_) => Err(AssumeRoleError::Base(CredentialError::Invalid {
                    origin: "[credentials] base".to_owned(),
                    problem: "the base source must give credentials directly".to_owned(),
                })),
                Err(e) => Err(AssumeRoleError::Base(e)),
            },
            BaseCredentials::CvmRole(role) => role
                .fetch()
                .await
                .map(|fetched| fetched.credentials)
                .map_err(AssumeRoleError::BaseCvmRole),
        }
    }

    /// One `AssumeRole` call with fresh base credentials.
    pub async fn fetch(&self) -> Result<AssumedCredentials, AssumeRoleError> {
        let base = self.base_credentials().await?;
        let params = json!({
            "RoleArn": self.request.role_arn,
            "RoleSessionName": self.request.role_session_name,
            "DurationSeconds": self.request.duration_seconds(),
        });
        let answer = {
            let _one_at_a_time = self.calling.lock().await;
            self.sts.set_credentials(base);
            let offset = self.sts.clock_offset_ms();
            match self.sts.call(ASSUME_ROLE_ACTION, &params).await {
                // The client learned STS's clock from this very answer's `Date`: signed again
                // with it, at once, as the engine does for CWP answers. Without this a host
                // whose clock is 15 minutes off fails every start-up (the offset learned dies
                // with the process), a restart loop under systemd.
                Err(error)
                    if error.class() == ErrorClass::Clock
                        && self.sts.clock_offset_ms() != offset =>
                {
                    self.sts.call(ASSUME_ROLE_ACTION, &params).await
                }
                answer => answer,
            }
        };
        let role_arn = || self.request.role_arn.clone();
        let answer = answer.map_err(|error| match error {
            // The body of an unreadable answer may hold the secrets: not even an excerpt.
            ApiError::Decode { .. } => AssumeRoleError::BadAnswer {
                role_arn: role_arn(),
                problem: "not a valid API answer".to_owned(),
            },
            error @ ApiError::Certificate(_) => AssumeRoleError::Certificate {
                role_arn: role_arn(),
                error,
            },
            error => match error.class() {
                ErrorClass::Throttled | ErrorClass::Transient | ErrorClass::Clock => {
                    AssumeRoleError::Unavailable {
                        role_arn: role_arn(),
                        error,
                    }
                }
                _ => AssumeRoleError::Refused {
                    role_arn: role_arn(),
                    error,
                },
            },
        })?;
        parse_answer(&answer.fields)
            .map(|(credentials, expires_at)| AssumedCredentials {
                credentials,
                expires_at,
                request_id: answer.request_id,
            })
            .map_err(|problem| AssumeRoleError::BadAnswer {
                role_arn: role_arn(),
                problem,
            })
    }
}

/// The credentials and expiry of an `AssumeRole` `Response`; the problem names the field.
/// Public (hidden) for the fuzz targets (`fuzz/`).
#[doc(hidden)]
pub fn parse_answer(
    response: &serde_json::Map<String, Value>,
) -> Result<(Credentials, i64), String> {
    let Some(Value::Object(credentials)) = response.get("Credentials") else {
        return Err("Credentials is missing or not an object".to_owned());
    };
    let bounded = |name: &str, max: usize| {
        credential_field(credentials, name).and_then(|value| {
            if value.len() > max {
                Err(format!("{name} is longer than {max} bytes"))
            } else {
                Ok(value)
            }
        })
    };
    let secret_id = bounded("TmpSecretId", MAX_SECRET_ID_BYTES)?;
    let secret_key = SecretString::from(bounded("TmpSecretKey", MAX_SECRET_CHARS)?);
    let token = SecretString::from(bounded("Token", MAX_TOKEN_CHARS)?);
    let expires_at = expiry(response)?;
    Ok((
        Credentials {
            secret_id,
            secret_key,
            token: Some(token),
        },
        expires_at,
    ))
}
